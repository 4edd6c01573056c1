//! What operators see: the alert lines the session layer's observations become, the incident
//! watch over them, the alert log, and the sinks that carry incidents out.

pub(crate) mod alert_log;
pub(crate) mod incidents;
pub(crate) mod lines;
pub(crate) mod reporter;
pub(crate) mod series;
pub(crate) mod sinks;
