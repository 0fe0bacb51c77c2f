//! The watcher's [`Api`] over HTTP: paged LISTs and WATCH streams of one collection through a
//! [`KubeClient`], with selectors, a bounded page size and streaming watch bodies.

use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use kubetrail_net::{NetError, ResponseBody};

use crate::client::{KubeClient, KubeError};
use crate::path::{ResourcePath, Selectors, list_query, probe_query, watch_query};
use crate::watcher::{Api, ChunkSource, WatchError, WatchStream};

/// Default limit for one LIST page body.
pub const DEFAULT_MAX_PAGE_BYTES: usize = 64 << 20;
/// Default limit for reading one LIST page body (the head has its own timeout).
pub const DEFAULT_LIST_TIMEOUT: Duration = Duration::from_secs(120);

/// List and watch of one collection (one API path and namespace) over HTTP.
#[derive(Debug, Clone)]
pub struct HttpApi {
    client: KubeClient,
    path: ResourcePath,
    selectors: Selectors,
    max_page_bytes: usize,
    list_timeout: Duration,
}

impl HttpApi {
    /// An API for `path` with `selectors` applied to lists and watches.
    pub fn new(client: KubeClient, path: ResourcePath, selectors: Selectors) -> Self {
        HttpApi {
            client,
            path,
            selectors,
            max_page_bytes: DEFAULT_MAX_PAGE_BYTES,
            list_timeout: DEFAULT_LIST_TIMEOUT,
        }
    }

    /// Limits how long one LIST page may take to arrive, body included (default 2 minutes).
    pub fn with_list_timeout(mut self, limit: Duration) -> Self {
        self.list_timeout = limit;
        self
    }

    /// Limits the size of one LIST page body (default 64 MiB).
    pub fn with_max_page_bytes(mut self, limit: usize) -> Self {
        self.max_page_bytes = limit;
        self
    }

    /// The collection this API lists and watches.
    pub fn path(&self) -> &ResourcePath {
        &self.path
    }

    /// The client.
    pub fn client(&self) -> &KubeClient {
        &self.client
    }
}

impl Api for HttpApi {
    async fn list_page(
        &self,
        continue_token: Option<&str>,
        limit: u32,
    ) -> Result<Bytes, WatchError> {
        let target = list_query(&self.path, &self.selectors, continue_token, limit);
        let read = async {
            let resp = self.client.get(&target).await?;
            let body = resp.into_body().read_to_end(self.max_page_bytes).await?;
            Ok::<_, KubeError>(body)
        };
        match tokio::time::timeout(self.list_timeout, read).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(WatchError::Request(KubeError::Net(
                NetError::ResponseTimeout {
                    url: self.client.url_for(&target),
                    after: self.list_timeout,
                },
            ))),
        }
    }

    async fn probe(&self, resource_version: &str) -> Result<(), WatchError> {
        let target = probe_query(&self.path, resource_version);
        let read = async {
            let resp = self.client.get(&target).await?;
            resp.into_body().read_to_end(self.max_page_bytes).await?;
            Ok::<_, KubeError>(())
        };
        match tokio::time::timeout(self.list_timeout, read).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(WatchError::Request(KubeError::Net(
                NetError::ResponseTimeout {
                    url: self.client.url_for(&target),
                    after: self.list_timeout,
                },
            ))),
        }
    }

    async fn watch(
        &self,
        resource_version: &str,
        timeout: Duration,
    ) -> Result<WatchStream, WatchError> {
        let target = watch_query(&self.path, &self.selectors, resource_version, timeout);
        let resp = self.client.get(&target).await?;
        Ok(Box::new(BodyChunks(resp.into_body())))
    }

    fn invalidate_credentials(&self) {
        self.client.tokens().invalidate();
    }
}

struct BodyChunks(ResponseBody);

impl ChunkSource for BodyChunks {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, WatchError>>> {
        self.0
            .poll_chunk(cx)
            .map(|o| o.map(|r| r.map_err(|e| WatchError::Request(KubeError::Net(e)))))
    }
}
