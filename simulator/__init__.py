"""A Fullstory API simulator on a real loopback socket: batch imports, operations, segment and legacy exports."""

from .server import RequestRecord, Simulator

__all__ = ["RequestRecord", "Simulator"]
