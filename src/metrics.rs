//! Process-wide counters and gauges, recorded from anywhere (actors, handlers) and read by
//! `/metrics` (Prometheus) and the admin endpoints.

/// A WebSocket connection was authenticated and registered.
pub fn ws_opened() {}
/// A WebSocket connection closed.
pub fn ws_closed() {}
/// An SSE stream opened.
pub fn sse_opened() {}
/// An SSE stream closed.
pub fn sse_closed() {}
/// `n` messages were persisted in one group commit of one room.
pub fn messages_persisted(_n: usize) {}
/// `n` events were handed to sessions by a room's fan-out.
pub fn fanout_deliveries(_n: usize) {}
/// A slow consumer was cut off.
pub fn slow_consumer_dropped() {}
