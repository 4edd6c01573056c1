//! What operators see: the alert lines the session layer's observations become, the incident
//! watch over them, the alert log, and the sinks that carry incidents out.

pub mod alert_log;
pub mod incidents;
pub mod lines;
pub mod reporter;
pub mod sinks;
