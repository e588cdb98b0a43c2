//! Delivery: the events the apply step wrote to the outbox, to the
//! application. `webhooks` pushes them, signed, in order, at least once.

pub mod webhooks;
