//! Running as a fleet: the session records several replicas share ([`redis`]), and how they
//! are written there ([`codec`]).

pub(crate) mod codec;
pub(crate) mod redis;
pub(crate) mod window;
