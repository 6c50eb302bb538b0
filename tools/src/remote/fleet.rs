//! The fleet routes of imaged's API (`/v1/fleet/…`, docs/fleet.md) as typed methods of
//! `Remote`: enrollment tokens, endpoints and their labels, groups, compliance.

use api::fleet::{
    Compliance, CreatedEnrollToken, EndpointDetail, EndpointId, EndpointSummary, Endpoints, EnrollTokens, Group, GroupName, GroupSummary,
    Groups, LabelChange, NewEnrollToken,
};

use super::{query, Body, Remote, RemoteError};

/// Which endpoints `GET /v1/fleet/endpoints` lists: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointQuery {
    /// Members of this group.
    pub group: Option<GroupName>,
    /// Labels `(key, value)` the endpoint must carry, each of them.
    pub labels: Vec<(String, String)>,
    /// Endpoints none of whose mounts runs this generation, `IMAGE@N`.
    pub not_on: Option<String>,
}

impl EndpointQuery {
    /// The query string, `?group=G&label=k%3Dv&not_on=IMAGE%40N`, or nothing.
    pub fn query_string(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(g) = &self.group {
            pairs.push(("group", g.to_string()));
        }
        for (k, v) in &self.labels {
            pairs.push(("label", format!("{k}={v}")));
        }
        if let Some(g) = &self.not_on {
            pairs.push(("not_on", g.clone()));
        }
        query(&pairs)
    }
}

impl Remote {
    /// Makes an enrollment token (admin); the answer carries the secret, shown this once.
    pub fn create_enroll_token(&self, token: &NewEnrollToken) -> Result<CreatedEnrollToken, RemoteError> {
        self.send(reqwest::Method::POST, &self.url("/v1/fleet/enroll-tokens"), Body::json(token))
    }

    /// Every enrollment token (never their secrets).
    pub fn enroll_tokens(&self) -> Result<EnrollTokens, RemoteError> {
        self.send(reqwest::Method::GET, &self.url("/v1/fleet/enroll-tokens"), Body::None)
    }

    /// The endpoints `query` selects.
    pub fn endpoints(&self, query: &EndpointQuery) -> Result<Endpoints, RemoteError> {
        let url = self.url(&format!("/v1/fleet/endpoints{}", query.query_string()));
        self.send(reqwest::Method::GET, &url, Body::None)
    }

    /// One endpoint: facts, labels, desired and actual mounts, cache, recent events.
    pub fn endpoint(&self, id: &EndpointId) -> Result<EndpointDetail, RemoteError> {
        self.send(reqwest::Method::GET, &self.url(&format!("/v1/fleet/endpoints/{id}")), Body::None)
    }

    /// Revokes an endpoint (admin): it can no longer open sessions.
    pub fn revoke_endpoint(&self, id: &EndpointId) -> Result<EndpointSummary, RemoteError> {
        self.send(reqwest::Method::DELETE, &self.url(&format!("/v1/fleet/endpoints/{id}")), Body::None)
    }

    /// Sets and removes operators' labels of an endpoint.
    pub fn change_labels(&self, id: &EndpointId, change: &LabelChange) -> Result<EndpointSummary, RemoteError> {
        self.send(reqwest::Method::PUT, &self.url(&format!("/v1/fleet/endpoints/{id}/labels")), Body::json(change))
    }

    /// Every group with its current endpoints.
    pub fn groups(&self) -> Result<Groups, RemoteError> {
        self.send(reqwest::Method::GET, &self.url("/v1/fleet/groups"), Body::None)
    }

    /// One group with its current endpoints.
    pub fn group(&self, name: &GroupName) -> Result<GroupSummary, RemoteError> {
        self.send(reqwest::Method::GET, &self.url(&format!("/v1/fleet/groups/{name}")), Body::None)
    }

    /// Creates a group; `group_exists` if one has its name.
    pub fn create_group(&self, group: &Group) -> Result<GroupSummary, RemoteError> {
        self.send(reqwest::Method::POST, &self.url("/v1/fleet/groups"), Body::json(group))
    }

    /// Creates a group or replaces the one of its name.
    pub fn put_group(&self, group: &Group) -> Result<GroupSummary, RemoteError> {
        self.send(reqwest::Method::PUT, &self.url(&format!("/v1/fleet/groups/{}", group.name)), Body::json(group))
    }

    /// Removes a group; the answer is what was removed.
    pub fn delete_group(&self, name: &GroupName) -> Result<GroupSummary, RemoteError> {
        self.send(reqwest::Method::DELETE, &self.url(&format!("/v1/fleet/groups/{name}")), Body::None)
    }

    /// How many endpoints run `target` (a channel's current generation, or `IMAGE@N`), and why
    /// each other one does not.
    pub fn compliance(&self, target: &str) -> Result<Compliance, RemoteError> {
        let url = self.url(&format!("/v1/fleet/compliance{}", query(&[("target", target.to_string())])));
        self.send(reqwest::Method::GET, &url, Body::None)
    }
}
