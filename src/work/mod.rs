//! Pulled work (the pull and hybrid models): who may claim a spoke's work. Workers in GitHub
//! Actions prove who they are with their job's OIDC ID token ([`oidc`]); self-hosted agents
//! with their own token ([`agents`]).

pub mod agents;
pub mod claim;
pub mod oidc;
pub mod worker;
