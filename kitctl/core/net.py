"""Is an endpoint reachable? One quick TCP probe, so that an offline box hears the way around at once instead of
after a library's retries with back-off (huggingface_hub: ~24 s before `kitctl data` said it was offline)."""
from __future__ import annotations

import os
import socket
from typing import Optional
from urllib.parse import urlsplit

PROBE_SECONDS = 5.0
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def probe_endpoint(endpoint: str, timeout: float = PROBE_SECONDS) -> Optional[str]:
    """None when a TCP connection to ``endpoint``'s host opens (or a proxy is set: it decides), else why not."""
    if any(os.environ.get(k) for k in PROXY_VARIABLES):
        return None
    parts = urlsplit(endpoint)
    host = parts.hostname
    if not host:
        return f"{endpoint!r} names no host"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return f"{endpoint!r} has a port that is not a number"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return f"cannot connect to {host}:{port} ({e.strerror or e})"


def hf_endpoint() -> str:
    """The HuggingFace endpoint the hub libraries use here (HF_ENDPOINT, set from mirrors.hf_endpoint, or the hub)."""
    return os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT
