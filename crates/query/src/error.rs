//! What can go wrong answering.

/// An answer that could not be given.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query's inputs do not make sense (a bad time, an unknown key in a URL).
    #[error("{0}")]
    BadQuery(String),
    /// The activity database could not be opened.
    #[error(transparent)]
    Open(#[from] kubetrail_activity::ActivityError),
    /// SQLite failed.
    #[error("{what}: {source}")]
    Sqlite {
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// PostgreSQL failed.
    #[error("{what}: {source}")]
    Postgres {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// The query ran past its time limit.
    #[error("the query ran longer than {0:?} and was stopped")]
    Timeout(std::time::Duration),
    /// The object exists in several namespaces and none was given.
    #[error("{object} exists in several namespaces ({namespaces}): name one with -n")]
    Ambiguous { object: String, namespaces: String },
    /// Nothing in the store is about the object.
    #[error("no record about {0} in the store{1}")]
    NotFound(String, String),
    /// A blocking task failed.
    #[error("a query task failed: {0}")]
    Task(String),
}
