//! spokehub: a GitHub App that runs one operation across many repositories at once and reports
//! one result. See `README.md` for the product and `hub` for the domain.

pub mod agent;
pub mod config;
pub mod demo;
pub mod emulator;
pub mod engine;
pub mod github;
pub mod hub;
pub mod report;
pub mod server;
pub mod setup;
pub mod store;
pub mod telemetry;
pub mod web;
pub mod work;
