"""Test stand-ins for vLLM (see standin_vllm.api_server); not vLLM, stdlib only."""
