"""Real-vLLM tier: the vLLM CPU image and the tiny model, both built by scripts/build-images.sh.

Missing prerequisites fail (never skip), so CI cannot pass without running this tier.
"""

from __future__ import annotations

import os
from pathlib import Path

import docker
import pytest

REPO = Path(__file__).resolve().parents[2]
VLLM_IMAGE = os.environ.get("VLLM_ORCH_VLLM_IMAGE", "vllm-orch/vllm-cpu:0.32.0")
MODEL_DIR = Path(os.environ.get("VLLM_ORCH_MODEL_DIR", REPO / ".demo" / "models"))


@pytest.fixture(scope="session", autouse=True)
def _ask_images_for_their_tables(fresh_option_table_cache):
    """The option tables come from the images in every run (tests/conftest.py)."""


@pytest.fixture(scope="session")
def vllm_image() -> str:
    try:
        client = docker.from_env(version="auto")
        client.images.get(VLLM_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{VLLM_IMAGE} missing: scripts/build-images.sh vllm-cpu builds it")
    except docker.errors.DockerException as exc:
        pytest.fail(f"no Docker engine ({exc}); run the tests through scripts/test.sh")
    if not (MODEL_DIR / "tiny-llama" / "config.json").is_file():
        pytest.fail(f"tiny model missing under {MODEL_DIR}: scripts/build-images.sh model makes it")
    return VLLM_IMAGE
