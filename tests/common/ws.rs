//! WebSocket test client (filled by the real-time work).
