"""A selective forwarding unit for multiparty WebRTC calls."""

__version__ = "0.1.0"
