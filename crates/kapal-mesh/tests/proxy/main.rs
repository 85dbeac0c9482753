//! Integration tests of `kapal proxy` with real sockets: hyper backends on 127.0.0.1:0, the
//! proxy in-process, hyper clients.

mod control;
mod filters;
mod http;
mod mtls;
mod ops;
mod otlp;
mod resilience;
mod support;
mod transparent;
