//! Placeholder until the backend lands.
use crate::error::{Error, Result};
/// Placeholder.
#[derive(Debug)]
pub struct DynamoStore;
impl DynamoStore {
    /// Placeholder.
    pub async fn open(_url: &str) -> Result<std::sync::Arc<dyn super::Store>> {
        Err(Error::Unsupported("not yet".into()))
    }
}
