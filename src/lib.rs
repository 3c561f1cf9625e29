//! spokehub: a GitHub App that runs one operation across many repositories at once and reports
//! one result. See `README.md` for the product and `hub` for the domain.

pub mod emulator;
pub mod hub;
