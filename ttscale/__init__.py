"""ttscale: test-time compute scaling of LLM reasoning."""

__version__ = "0.1.0"
