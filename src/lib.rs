pub mod config;
pub mod hub;
pub mod report;
pub mod store;
