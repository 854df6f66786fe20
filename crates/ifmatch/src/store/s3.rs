//! Placeholder until the backend lands.
use crate::error::{Error, Result};
/// Placeholder.
#[derive(Debug)]
pub struct S3Store;
impl S3Store {
    /// Placeholder.
    pub async fn open(_url: &str) -> Result<std::sync::Arc<dyn super::Store>> {
        Err(Error::Unsupported("not yet".into()))
    }
}
