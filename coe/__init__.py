"""coe: compose heterogeneous expert LLMs behind one OpenAI-compatible API."""
