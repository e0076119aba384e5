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


def probe_http(url: str, timeout: float = PROBE_SECONDS, ca_cert: Optional[str] = None) -> Optional[str]:
    """None when ``url``'s server answers HTTP (any status: it is there) within ``timeout``, else why not: no name,
    a refused or silent port, a server that accepts and never answers, a TLS failure. A proxy in the environment
    decides for itself: None (not probed from here)."""
    import ssl

    if any(os.environ.get(k) for k in PROXY_VARIABLES):
        return None
    parts = urlsplit(url)
    host = parts.hostname
    if not host or parts.scheme not in ("http", "https"):
        return f"{url!r} is not an http(s) URL"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return f"{url!r} has a port that is not a number"
    where = f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as e:
        return f"{host} does not resolve ({e.strerror or e})"
    except TimeoutError:
        return f"no connection to {where} within {timeout:g} s (a firewall dropping it?)"
    except OSError as e:
        return f"cannot connect to {where} ({e.strerror or e})"
    try:
        sock.settimeout(timeout)
        if parts.scheme == "https":
            ctx = ssl.create_default_context(cafile=ca_cert)
            sock = ctx.wrap_socket(sock, server_hostname=host)
        path = parts.path or "/"
        sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: kitctl-doctor\r\n"
                     "Connection: close\r\n\r\n".encode("ascii", "replace"))
        head = sock.recv(16)
    except TimeoutError:
        return f"{where} accepts connections but does not answer within {timeout:g} s"
    except ssl.SSLError as e:
        return f"TLS with {where} fails ({e.reason or e}; a proxy's own certificate? set ca_cert in kit.yaml)"
    except OSError as e:
        return f"{where} closed the connection ({e.strerror or e})"
    finally:
        sock.close()
    if not head.startswith(b"HTTP/"):
        return f"{where} answers, but not HTTP" if head else f"{where} closed the connection without an answer"
    return None
