//! The route table: every endpoint of the API as one variant of [`Route`], parsed from the
//! method and path in one place. A new endpoint does not compile until it is parsed, labelled
//! for metrics, given its access rule and dispatched.

use engram_engine::search::SearchMode;
use hyper::{Method, StatusCode};

use crate::config::Role;
use crate::error::ApiError;

/// One endpoint, with what its path carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    Metrics,
    /// The OpenAPI document.
    OpenApi,
    /// A file of the web console (`""`: the page itself).
    Console(String),
    CreateMemory,
    ListMemories,
    BatchCreate,
    /// `None`: the mode the body names (hybrid by default); `Some`: forced by the path.
    Search(Option<SearchMode>),
    GetMemory(String),
    UpdateMemory(String),
    DeleteMemory(String),
    /// A memory's versions, newest first.
    MemoryHistory(String),
    /// A new version equal to an old one.
    RevertMemory(String),
    /// Every namespace with its counts per tier.
    ListNamespaces,
    GetNamespace(String),
    /// Deletes every memory of a namespace; `?purge=true` purges them and scrubs the data.
    DeleteNamespace(String),
    /// Every memory of a namespace with its versions, streamed as JSON lines.
    ExportNamespace(String),
    /// A streamed export, into a namespace.
    ImportNamespace(String),
    CreateSnapshot,
    ListSnapshots,
    DeleteSnapshot(String),
    Migrate,
    Compact,
    Tiers,
    /// The MCP endpoint (Streamable HTTP, stateless: POST only).
    Mcp,
    /// Starts re-embedding every memory into a new vector space.
    CreateMigration,
    ListMigrations,
    GetMigration(String),
    /// Stops a migration and drops its vector space.
    DeleteMigration(String),
    PauseMigration(String),
    ResumeMigration(String),
    /// Nearest neighbours in a migration's space only.
    SearchMigration(String),
    /// The store's searches rank a ready migration's vectors from now on.
    ActivateMigration(String),
    /// The store's searches rank its own vectors again.
    DeactivateMigration(String),
    OwnVectors,
    DropOwnVectors,
    /// Moves the engine's clock forward; answers only on a daemon started with
    /// `ENGRAM_TEST_CLOCK=adjustable`, and 404 otherwise.
    TestClock,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No key needed (probes and scrapers).
    Open,
    /// A valid key when keys are configured; namespaces are checked by the handler.
    Key,
    /// A key that is not limited to namespaces.
    Admin,
}

impl Route {
    /// The route for `method` on `path`: 404 for an unknown path, 405 for a method the path
    /// does not take.
    pub fn parse(method: &Method, path: &str) -> Result<Route, ApiError> {
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        // A 405 names the methods the path takes (`Allow`, RFC 9110).
        let not_allowed = |allow: &'static str| ApiError {
            allow: Some(allow),
            ..ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                format!("{method} is not allowed on {path}; allowed: {allow}"),
            )
        };
        let by_method = |get: Option<Route>, post: Option<Route>| {
            let allow = match (&get, &post) {
                (Some(_), Some(_)) => "GET, POST",
                (Some(_), None) => "GET",
                _ => "POST",
            };
            match *method {
                Method::GET => get,
                Method::POST => post,
                _ => None,
            }
            .ok_or_else(|| not_allowed(allow))
        };
        match segments.as_slice() {
            ["api", "v1", "health"] => by_method(Some(Route::Health), None),
            ["api", "v1", "openapi.json"] => by_method(Some(Route::OpenApi), None),
            ["console"] => by_method(Some(Route::Console(String::new())), None),
            ["console", file] => by_method(Some(Route::Console((*file).to_owned())), None),
            ["console", "pages", file] => {
                by_method(Some(Route::Console(format!("pages/{file}"))), None)
            }
            ["metrics"] | ["api", "v1", "metrics"] => by_method(Some(Route::Metrics), None),
            ["api", "v1", "memories"] => {
                by_method(Some(Route::ListMemories), Some(Route::CreateMemory))
            }
            ["api", "v1", "memories", "batch"] => by_method(None, Some(Route::BatchCreate)),
            ["api", "v1", "search"] => by_method(None, Some(Route::Search(None))),
            ["api", "v1", "search", "semantic"] => {
                by_method(None, Some(Route::Search(Some(SearchMode::Semantic))))
            }
            ["api", "v1", "search", "text"] => {
                by_method(None, Some(Route::Search(Some(SearchMode::Text))))
            }
            ["api", "v1", "memories", id] => {
                let id = (*id).to_owned();
                match *method {
                    Method::GET => Ok(Route::GetMemory(id)),
                    Method::PATCH | Method::PUT => Ok(Route::UpdateMemory(id)),
                    Method::DELETE => Ok(Route::DeleteMemory(id)),
                    _ => Err(not_allowed("GET, PATCH, PUT, DELETE")),
                }
            }
            ["api", "v1", "memories", id, "history"] => {
                by_method(Some(Route::MemoryHistory((*id).to_owned())), None)
            }
            ["api", "v1", "memories", id, "revert"] => {
                by_method(None, Some(Route::RevertMemory((*id).to_owned())))
            }
            ["api", "v1", "namespaces"] => by_method(Some(Route::ListNamespaces), None),
            ["api", "v1", "namespaces", ns] => match *method {
                Method::GET => Ok(Route::GetNamespace((*ns).to_owned())),
                Method::DELETE => Ok(Route::DeleteNamespace((*ns).to_owned())),
                _ => Err(not_allowed("GET, DELETE")),
            },
            ["api", "v1", "namespaces", ns, "export"] => {
                by_method(Some(Route::ExportNamespace((*ns).to_owned())), None)
            }
            ["api", "v1", "namespaces", ns, "import"] => {
                by_method(None, Some(Route::ImportNamespace((*ns).to_owned())))
            }
            ["api", "v1", "admin", "snapshots"] => {
                by_method(Some(Route::ListSnapshots), Some(Route::CreateSnapshot))
            }
            ["api", "v1", "admin", "snapshots", id] => match *method {
                Method::DELETE => Ok(Route::DeleteSnapshot((*id).to_owned())),
                _ => Err(not_allowed("DELETE")),
            },
            ["api", "v1", "admin", "embedding", "migrations"] => {
                by_method(Some(Route::ListMigrations), Some(Route::CreateMigration))
            }
            ["api", "v1", "admin", "embedding", "migrations", id] => match *method {
                Method::GET => Ok(Route::GetMigration((*id).to_owned())),
                Method::DELETE => Ok(Route::DeleteMigration((*id).to_owned())),
                _ => Err(not_allowed("GET, DELETE")),
            },
            ["api", "v1", "admin", "embedding", "migrations", id, "pause"] => {
                by_method(None, Some(Route::PauseMigration((*id).to_owned())))
            }
            ["api", "v1", "admin", "embedding", "migrations", id, "resume"] => {
                by_method(None, Some(Route::ResumeMigration((*id).to_owned())))
            }
            ["api", "v1", "admin", "embedding", "migrations", id, "search"] => {
                by_method(None, Some(Route::SearchMigration((*id).to_owned())))
            }
            ["api", "v1", "admin", "embedding", "migrations", id, "activate"] => {
                by_method(None, Some(Route::ActivateMigration((*id).to_owned())))
            }
            ["api", "v1", "admin", "embedding", "migrations", id, "deactivate"] => {
                by_method(None, Some(Route::DeactivateMigration((*id).to_owned())))
            }
            ["api", "v1", "admin", "embedding", "own-vectors"] => match *method {
                Method::GET => Ok(Route::OwnVectors),
                Method::DELETE => Ok(Route::DropOwnVectors),
                _ => Err(not_allowed("GET, DELETE")),
            },
            ["api", "v1", "admin", "migrate"] => by_method(None, Some(Route::Migrate)),
            ["api", "v1", "admin", "compact"] => by_method(None, Some(Route::Compact)),
            ["api", "v1", "admin", "test-clock"] => by_method(None, Some(Route::TestClock)),
            ["api", "v1", "tiers"] => by_method(Some(Route::Tiers), None),
            // Stateless Streamable HTTP: every message is a POST (no GET stream, no session
            // to DELETE).
            ["mcp"] => by_method(None, Some(Route::Mcp)),
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "ROUTE_NOT_FOUND",
                format!("no route for {path}"),
            )),
        }
    }

    /// The `route` label of the request metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Route::Health => "health",
            Route::Metrics => "metrics",
            Route::OpenApi => "openapi",
            Route::Console(_) => "console",
            Route::CreateMemory => "create",
            Route::ListMemories => "list",
            Route::BatchCreate => "batch",
            Route::Search(None) => "search",
            Route::Search(Some(SearchMode::Semantic)) => "search_semantic",
            Route::Search(Some(SearchMode::Text)) => "search_text",
            Route::Search(Some(SearchMode::Hybrid)) => "search",
            Route::GetMemory(_) => "get",
            Route::UpdateMemory(_) => "update",
            Route::DeleteMemory(_) => "delete",
            Route::MemoryHistory(_) => "history",
            Route::RevertMemory(_) => "revert",
            Route::ListNamespaces => "namespace_list",
            Route::GetNamespace(_) => "namespace_get",
            Route::DeleteNamespace(_) => "namespace_delete",
            Route::ExportNamespace(_) => "namespace_export",
            Route::ImportNamespace(_) => "namespace_import",
            Route::CreateSnapshot => "snapshot_create",
            Route::ListSnapshots => "snapshot_list",
            Route::DeleteSnapshot(_) => "snapshot_delete",
            Route::Migrate => "admin_migrate",
            Route::Compact => "admin_compact",
            Route::Tiers => "tiers",
            Route::Mcp => "/mcp",
            Route::TestClock => "admin_test_clock",
            Route::CreateMigration => "migration_create",
            Route::ListMigrations => "migration_list",
            Route::GetMigration(_) => "migration_get",
            Route::DeleteMigration(_) => "migration_delete",
            Route::PauseMigration(_) => "migration_pause",
            Route::ResumeMigration(_) => "migration_resume",
            Route::SearchMigration(_) => "migration_search",
            Route::ActivateMigration(_) => "migration_activate",
            Route::DeactivateMigration(_) => "migration_deactivate",
            Route::OwnVectors => "own_vectors_get",
            Route::DropOwnVectors => "own_vectors_drop",
        }
    }

    /// Who may call the route: probes and scrapers need no key; admin routes need an admin key
    /// not limited to namespaces; the rest any key whose role covers [`Route::role`].
    pub fn access(&self) -> Access {
        match (self, self.role()) {
            (Route::Health | Route::Metrics | Route::OpenApi | Route::Console(_), _) => {
                Access::Open
            }
            (_, Role::Admin) => Access::Admin,
            (_, Role::Read | Role::Write) => Access::Key,
        }
    }

    /// The role a key needs for the route (when keys are configured). Purging a memory
    /// (`DELETE …?purge=true`, or MCP `forget` with `purge`) needs admin, checked where both
    /// delete (`handlers::memories::delete_one`); so does purging a namespace
    /// (`handlers::namespaces::delete`).
    pub fn role(&self) -> Role {
        match self {
            Route::Health
            | Route::Metrics
            | Route::OpenApi
            | Route::Console(_)
            | Route::ListMemories
            | Route::GetMemory(_)
            | Route::MemoryHistory(_)
            | Route::Search(_)
            | Route::ListNamespaces
            | Route::GetNamespace(_)
            | Route::ExportNamespace(_)
            | Route::Mcp => Role::Read,
            Route::CreateMemory
            | Route::BatchCreate
            | Route::UpdateMemory(_)
            | Route::RevertMemory(_)
            | Route::DeleteMemory(_)
            | Route::DeleteNamespace(_)
            | Route::ImportNamespace(_) => Role::Write,
            Route::CreateSnapshot
            | Route::ListSnapshots
            | Route::DeleteSnapshot(_)
            | Route::Migrate
            | Route::Compact
            | Route::Tiers
            | Route::TestClock
            | Route::CreateMigration
            | Route::ListMigrations
            | Route::GetMigration(_)
            | Route::DeleteMigration(_)
            | Route::PauseMigration(_)
            | Route::ResumeMigration(_)
            | Route::SearchMigration(_)
            | Route::ActivateMigration(_)
            | Route::DeactivateMigration(_)
            | Route::OwnVectors
            | Route::DropOwnVectors => Role::Admin,
        }
    }

    /// The query parameters the route takes; any other is refused, naming it.
    pub fn query_parameters(&self) -> &'static [&'static str] {
        match self {
            Route::CreateMemory
            | Route::BatchCreate
            | Route::UpdateMemory(_)
            | Route::RevertMemory(_) => &[
                "include_embedding",
                "embedding_format",
                "wait_for_embedding",
                "return",
            ],
            Route::GetMemory(_) => &["include_embedding", "embedding_format", "version", "as_of"],
            Route::MemoryHistory(_) => {
                &["limit", "cursor", "include_embedding", "embedding_format"]
            }
            Route::DeleteMemory(_) | Route::DeleteNamespace(_) => &["purge"],
            Route::ExportNamespace(_) => &["compress", "embedding_format"],
            Route::ImportNamespace(_) => &["on_conflict"],
            Route::ListMemories => &[
                "namespace",
                "tier",
                "status",
                "tag",
                "limit",
                "cursor",
                "include_embedding",
                "embedding_format",
                "include_superseded",
            ],
            Route::Health
            | Route::Metrics
            | Route::OpenApi
            | Route::Console(_)
            | Route::Search(_)
            | Route::ListNamespaces
            | Route::GetNamespace(_)
            | Route::CreateSnapshot
            | Route::ListSnapshots
            | Route::DeleteSnapshot(_)
            | Route::Migrate
            | Route::Compact
            | Route::Tiers
            | Route::Mcp
            | Route::TestClock
            | Route::CreateMigration
            | Route::ListMigrations
            | Route::GetMigration(_)
            | Route::DeleteMigration(_)
            | Route::PauseMigration(_)
            | Route::ResumeMigration(_)
            | Route::SearchMigration(_)
            | Route::ActivateMigration(_)
            | Route::DeactivateMigration(_)
            | Route::OwnVectors
            | Route::DropOwnVectors => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(method: Method, path: &str) -> u16 {
        Route::parse(&method, path)
            .expect_err("refused")
            .status
            .as_u16()
    }

    #[test]
    fn every_endpoint_parses_to_its_route() {
        let id = "0190f0f0-0000-7000-8000-000000000000";
        let cases = [
            (Method::GET, "/api/v1/health".to_owned(), Route::Health),
            (
                Method::GET,
                "/console/".to_owned(),
                Route::Console(String::new()),
            ),
            (
                Method::GET,
                "/console/pages/search.js".to_owned(),
                Route::Console("pages/search.js".into()),
            ),
            (Method::GET, "/metrics".to_owned(), Route::Metrics),
            (Method::GET, "/api/v1/metrics".to_owned(), Route::Metrics),
            (
                Method::POST,
                "/api/v1/memories".to_owned(),
                Route::CreateMemory,
            ),
            (
                Method::GET,
                "/api/v1/memories/".to_owned(),
                Route::ListMemories,
            ),
            (
                Method::POST,
                "/api/v1/memories/batch".to_owned(),
                Route::BatchCreate,
            ),
            (
                Method::POST,
                "/api/v1/search".to_owned(),
                Route::Search(None),
            ),
            (
                Method::POST,
                "/api/v1/search/text".to_owned(),
                Route::Search(Some(SearchMode::Text)),
            ),
            (
                Method::GET,
                format!("/api/v1/memories/{id}"),
                Route::GetMemory(id.into()),
            ),
            (
                Method::PUT,
                format!("/api/v1/memories/{id}"),
                Route::UpdateMemory(id.into()),
            ),
            (
                Method::PATCH,
                format!("/api/v1/memories/{id}"),
                Route::UpdateMemory(id.into()),
            ),
            (
                Method::DELETE,
                format!("/api/v1/memories/{id}"),
                Route::DeleteMemory(id.into()),
            ),
            (
                Method::POST,
                "/api/v1/admin/snapshots".to_owned(),
                Route::CreateSnapshot,
            ),
            (
                Method::GET,
                "/api/v1/admin/snapshots".to_owned(),
                Route::ListSnapshots,
            ),
            (
                Method::DELETE,
                format!("/api/v1/admin/snapshots/{id}"),
                Route::DeleteSnapshot(id.into()),
            ),
            (
                Method::POST,
                "/api/v1/admin/migrate".to_owned(),
                Route::Migrate,
            ),
            (
                Method::POST,
                "/api/v1/admin/compact".to_owned(),
                Route::Compact,
            ),
            (Method::GET, "/api/v1/tiers".to_owned(), Route::Tiers),
            (
                Method::GET,
                format!("/api/v1/memories/{id}/history"),
                Route::MemoryHistory(id.into()),
            ),
            (
                Method::POST,
                format!("/api/v1/memories/{id}/revert"),
                Route::RevertMemory(id.into()),
            ),
            (Method::POST, "/mcp".to_owned(), Route::Mcp),
            (
                Method::POST,
                "/api/v1/admin/embedding/migrations".to_owned(),
                Route::CreateMigration,
            ),
            (
                Method::GET,
                "/api/v1/admin/embedding/migrations".to_owned(),
                Route::ListMigrations,
            ),
            (
                Method::GET,
                "/api/v1/admin/embedding/migrations/3".to_owned(),
                Route::GetMigration("3".into()),
            ),
            (
                Method::DELETE,
                "/api/v1/admin/embedding/migrations/3".to_owned(),
                Route::DeleteMigration("3".into()),
            ),
            (
                Method::POST,
                "/api/v1/admin/embedding/migrations/3/pause".to_owned(),
                Route::PauseMigration("3".into()),
            ),
            (
                Method::POST,
                "/api/v1/admin/embedding/migrations/3/resume".to_owned(),
                Route::ResumeMigration("3".into()),
            ),
            (
                Method::POST,
                "/api/v1/admin/embedding/migrations/3/search".to_owned(),
                Route::SearchMigration("3".into()),
            ),
            (
                Method::POST,
                "/api/v1/admin/embedding/migrations/3/activate".to_owned(),
                Route::ActivateMigration("3".into()),
            ),
            (
                Method::POST,
                "/api/v1/admin/embedding/migrations/3/deactivate".to_owned(),
                Route::DeactivateMigration("3".into()),
            ),
            (
                Method::GET,
                "/api/v1/admin/embedding/own-vectors".to_owned(),
                Route::OwnVectors,
            ),
            (
                Method::DELETE,
                "/api/v1/admin/embedding/own-vectors".to_owned(),
                Route::DropOwnVectors,
            ),
            (
                Method::POST,
                "/api/v1/admin/test-clock".to_owned(),
                Route::TestClock,
            ),
        ];
        for (method, path, route) in cases {
            assert_eq!(
                Route::parse(&method, &path).expect(&path),
                route,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn a_405_names_the_allowed_methods() {
        let e = Route::parse(&Method::TRACE, "/api/v1/memories").expect_err("405");
        assert_eq!(e.allow, Some("GET, POST"));
        let e = Route::parse(&Method::POST, "/api/v1/memories/x").expect_err("405");
        assert_eq!(e.allow, Some("GET, PATCH, PUT, DELETE"));
        let e = Route::parse(&Method::GET, "/api/v1/search").expect_err("405");
        assert_eq!(e.allow, Some("POST"));
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405() {
        assert_eq!(status(Method::GET, "/api/v2/health"), 404);
        assert_eq!(status(Method::GET, "/"), 404);
        assert_eq!(status(Method::POST, "/api/v1/health"), 405);
        assert_eq!(status(Method::GET, "/api/v1/search"), 405);
        assert_eq!(status(Method::DELETE, "/api/v1/memories"), 405);
        assert_eq!(status(Method::POST, "/api/v1/memories/x"), 405);
        assert_eq!(status(Method::GET, "/api/v1/admin/snapshots/x"), 405);
    }

    #[test]
    fn admin_routes_need_an_unlimited_key_and_take_no_query() {
        for r in [
            Route::Tiers,
            Route::Migrate,
            Route::DeleteSnapshot("x".into()),
            Route::TestClock,
        ] {
            assert_eq!(r.access(), Access::Admin);
            assert!(r.query_parameters().is_empty());
        }
        assert_eq!(Route::Health.access(), Access::Open);
        assert_eq!(Route::GetMemory("x".into()).access(), Access::Key);
    }
}
