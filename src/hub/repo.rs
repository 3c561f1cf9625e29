//! What the hub knows of a repository from the installation's listing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::RepoName;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Public,
    Private,
    Internal,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
            Visibility::Internal => "internal",
        }
    }
}

/// One repository of an installation, as listed by `GET /installation/repositories`, plus its
/// custom property values when the selector needs them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoInfo {
    pub name: RepoName,
    pub default_branch: String,
    pub archived: bool,
    pub fork: bool,
    pub visibility: Visibility,
    pub topics: Vec<String>,
    /// Custom property values (`GET /orgs/{org}/properties/values`); empty when not fetched.
    pub properties: BTreeMap<String, String>,
}
