//! Delivery: the events the apply step wrote to the outbox, to the
//! application. `webhooks` pushes them, signed, in order, at least once;
//! `scim_push` provisions an application's SCIM endpoint from them.

pub mod scim_push;
pub mod webhooks;
