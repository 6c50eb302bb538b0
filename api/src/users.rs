//! People and their roles: `POST /v1/users`, `GET /v1/users`, `DELETE /v1/users/{name}` (admin
//! only). Each user has one bearer token, shown once when the user is added; the server keeps
//! only its hash. The data directory's `admin.token` is the bootstrap admin, named `admin`.

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read objects, generations, channels, reports (needed only when the server requires a
    /// token for reads).
    Read,
    /// Upload objects, publish generations, keep marks, move channels.
    Publish,
    /// Record signed test evidence.
    Attest,
    /// Record signed approvals.
    Approve,
    /// Users, channel policies, signed metadata (trust), garbage collection.
    Admin,
}

/// A user's role: a fixed set of permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Read, publish, move channels, record test evidence.
    Publisher,
    /// Read, record test evidence and approvals.
    Approver,
    /// Read only.
    Viewer,
}

impl Role {
    /// Whether this role grants `p`.
    pub fn allows(self, p: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Publisher => matches!(p, Read | Publish | Attest),
            Role::Approver => matches!(p, Read | Attest | Approve),
            Role::Viewer => p == Read,
        }
    }

    /// The name used on command lines and in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Publisher => "publisher",
            Role::Approver => "approver",
            Role::Viewer => "viewer",
        }
    }

    /// Parses `admin`, `publisher`, `approver` or `viewer`.
    pub fn parse(s: &str) -> Option<Role> {
        [Role::Admin, Role::Publisher, Role::Approver, Role::Viewer].into_iter().find(|r| r.as_str() == s)
    }
}

/// A user name: 1-64 of `[a-z0-9._-]`, starting with a letter or digit. `admin` is taken by
/// the bootstrap token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct UserName(String);

/// A user name that breaks the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadUserName(pub String);

impl std::fmt::Display for BadUserName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid user name {:?}: use 1-64 of [a-z0-9._-], starting with a letter or digit", self.0)
    }
}

impl std::error::Error for BadUserName {}

impl UserName {
    /// Validates and wraps a name.
    pub fn new(s: &str) -> Result<UserName, BadUserName> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-');
        if ok {
            Ok(UserName(s.to_string()))
        } else {
            Err(BadUserName(s.to_string()))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UserName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for UserName {
    type Err = BadUserName;
    fn from_str(s: &str) -> Result<UserName, BadUserName> {
        UserName::new(s)
    }
}

impl<'de> serde::Deserialize<'de> for UserName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<UserName, D::Error> {
        let s = String::deserialize(d)?;
        UserName::new(&s).map_err(serde::de::Error::custom)
    }
}

/// Body of `POST /v1/users`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddUser {
    /// The new user's name.
    pub name: UserName,
    /// Its role.
    pub role: Role,
}

/// A user as the server lists it (never with the token).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct User {
    /// Name.
    pub name: UserName,
    /// Role.
    pub role: Role,
    /// Seconds since the epoch.
    pub created: i64,
    /// Who added it.
    pub created_by: String,
    /// When its token was revoked, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<i64>,
}

/// Answer of `POST /v1/users`: the user and its token, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewUser {
    /// The user.
    pub user: User,
    /// Its bearer token.
    pub token: String,
}

/// Answer of `GET /v1/users`, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Users {
    /// Every user, revoked ones included.
    pub users: Vec<User>,
}
