//! What two of lodge's processes share, in one place: where things are under the run and
//! log directories (`layout`), the routes snapshot the agent publishes for the proxy
//! (`routes`), the wake-up the panel sends the agent (`wake`), the sockets the agent hands
//! the proxy and the panel (`handover`), the proxy's control socket (`proxy_control`), the
//! agent's reports to the panel (`report`) and the signals (`signals`). No part imports another part's internals: what they share is here or in
//! `domain`.

pub mod handover;
mod layout;
pub mod proxy_control;
pub mod report;
pub mod routes;
pub mod signals;
pub mod wake;

pub use layout::{LogDir, RunDir, TenantsRoot};
