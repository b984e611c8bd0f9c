"""vllm-orch: run fleets of vLLM servers from one declarative TOML file."""

__version__ = "0.1.0"
