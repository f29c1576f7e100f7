"""The signaling API: typed wire messages and the WebSocket loop."""
