//! The store the page reads, opened on first use and kept: the `store` output creates its
//! database when the pipeline starts, possibly after the page is already serving, so a
//! failed open is tried again at the next request rather than at start only.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use kubetrail_query::Store;
use tokio::sync::OnceCell;

/// An open store and whatever must live as long as it (a PostgreSQL connection's driver).
pub struct OpenedStore {
    pub store: Store,
    pub keep: Option<Box<dyn Send + Sync>>,
}

/// Opens the store to read (with the page's time limit per query), or says why not.
pub type OpenStore = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<OpenedStore, String>> + Send>> + Send + Sync,
>;

/// The store, once open.
pub(crate) struct StoreSlot {
    open: OpenStore,
    opened: OnceCell<OpenedStore>,
}

impl StoreSlot {
    pub fn new(open: OpenStore) -> StoreSlot {
        StoreSlot {
            open,
            opened: OnceCell::new(),
        }
    }

    /// The store, opening it if it is not open yet.
    pub async fn get(&self) -> Result<Store, String> {
        let opened = self
            .opened
            .get_or_try_init(|| {
                let open = self.open.clone();
                async move { open().await }
            })
            .await?;
        Ok(opened.store.clone())
    }
}
