"""The loopback guard: the dashboard has no login, so it refuses to serve beyond this machine unless asked."""
from __future__ import annotations

import ipaddress
import os
import socket
import sys
from functools import cache

import streamlit as st
from streamlit import config as st_config

from app.ui.text import plain

ALLOW_REMOTE = "SDLAB_ALLOW_REMOTE"  # =1: serve a non-loopback address on purpose (README, "Serving a class")


def serve_locally() -> None:
    """Refuse to serve the page beyond this machine unless SDLAB_ALLOW_REMOTE=1 asks for it: anyone who reaches
    the dashboard can delete runs and start trainings, and it has no login. app/.streamlit/config.toml binds
    localhost whatever the working directory (Streamlit reads the main script's .streamlit/); a flag or a
    STREAMLIT_SERVER_ADDRESS variable can still set another address, and the server has bound it before any
    page runs, so the page is what can refuse. Usage statistics stay off unless asked for."""
    if not st_config.is_manually_set("browser.gatherUsageStats"):
        st_config.set_option("browser.gatherUsageStats", False)
    address = exposed_address()
    if address is None:
        return
    line = (f"sdlab refuses to serve this page on {address}: anyone who reaches it could delete runs and start "
            f"trainings, and there is no login. Serve it on localhost (the default), or set {ALLOW_REMOTE}=1 to "
            "serve a class on a network (README, 'Serving a class').")
    _say_once(line)
    st.error(plain(line), icon=":material/lock:")
    st.stop()


def exposed_address() -> str | None:
    """The address the server listens on when it reaches beyond this machine and SDLAB_ALLOW_REMOTE is not 1;
    None when it is local. An unset or empty server.address makes Streamlit listen on every interface (AppTest
    binds nothing: unset is local there)."""
    if os.environ.get(ALLOW_REMOTE) == "1":
        return None
    address = st_config.get_option("server.address")
    if address is None and st_config.get_option("global.appTest"):
        return None
    if address and _local(address):
        return None
    return address or "every network interface (server.address is empty)"


@cache
def _local(address: str) -> bool:
    """A Unix socket, or a name or IP address that resolves to loopback addresses only."""
    if address.startswith("unix://"):
        return True
    try:
        found = {info[4][0] for info in socket.getaddrinfo(address, None)}
    except (OSError, UnicodeError):
        return False  # Streamlit cannot bind it either
    ips = [ipaddress.ip_address(ip.split("%")[0]) for ip in found]
    return bool(ips) and all((getattr(ip, "ipv4_mapped", None) or ip).is_loopback for ip in ips)


@cache
def _say_once(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
