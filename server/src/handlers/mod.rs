//! Handlers: one module per group of endpoints. Each parses what the router did not, calls the
//! engine on a blocking thread, and answers with a typed reply from `api::replies`.

pub(crate) mod admin;
pub(crate) mod history;
pub(crate) mod memories;
pub(crate) mod migrations;
pub(crate) mod namespaces;
pub(crate) mod ops;
pub(crate) mod search;
pub(crate) mod transfer;
