//! The object-store clients of a bucket, configured the providers' usual
//! ways: `object_store` for every provider, and on GCS the JSON API that
//! writes ([`crate::snapshot::resumable`]).

use crate::snapshot::resumable::GcsJson;
use crate::snapshot::target::Provider;
use object_store::ObjectStore;
use std::sync::Arc;

/// A bucket's `object_store` client, and on GCS the JSON API that writes.
pub(crate) type Clients = (Arc<dyn ObjectStore>, Option<Arc<GcsJson>>);

/// The client for `bucket`, configured the provider's usual way:
/// - S3: `AWS_*` (`AWS_ENDPOINT_URL` + `AWS_ALLOW_HTTP` for S3-compatible
///   stores), instance and web-identity credentials;
/// - GCS: `GOOGLE_APPLICATION_CREDENTIALS` (or `GOOGLE_SERVICE_ACCOUNT*`),
///   else the metadata server (workload identity); `STORAGE_EMULATOR_HOST`
///   points it at an emulator, unsigned, over plain HTTP;
/// - Azure: `AZURE_STORAGE_ACCOUNT_NAME` with `AZURE_STORAGE_ACCOUNT_KEY`
///   or a SAS (`AZURE_STORAGE_SAS_KEY`), workload identity
///   (`AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`);
///   `AZURE_STORAGE_USE_EMULATOR=true` for Azurite (`AZURITE_BLOB_STORAGE_URL`).
pub(crate) fn client(provider: Provider, bucket: &str) -> Result<Clients, object_store::Error> {
    Ok(match provider {
        Provider::S3 => (
            Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()?,
            ),
            None,
        ),
        Provider::Gcs => {
            let mut builder =
                object_store::gcp::GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
            let emulator = std::env::var("STORAGE_EMULATOR_HOST")
                .ok()
                .filter(|h| !h.is_empty())
                .map(|h| {
                    if h.contains("://") {
                        h
                    } else {
                        format!("http://{h}")
                    }
                });
            if let Some(base) = &emulator {
                // An emulator takes no OAuth token: a key document that
                // disables OAuth, as emulators document it (it holds no
                // secret).
                let key = serde_json::json!({
                    "private_key": "",
                    "private_key_id": "",
                    "client_email": "",
                    "gcs_base_url": base,
                    "disable_oauth": true,
                });
                builder = builder
                    .with_service_account_key(key.to_string())
                    .with_base_url(base)
                    .with_client_options(object_store::ClientOptions::new().with_allow_http(true));
            }
            let base = emulator
                .or_else(|| builder.get_config_value(&object_store::gcp::GoogleConfigKey::BaseUrl))
                .unwrap_or_else(|| "https://storage.googleapis.com".to_owned());
            let store = builder.build()?;
            let json = GcsJson::new(&base, bucket, store.credentials().clone()).map_err(|e| {
                object_store::Error::Generic {
                    store: "GCS",
                    source: e.into(),
                }
            })?;
            (Arc::new(store), Some(Arc::new(json)))
        }
        Provider::Azure => (
            Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(bucket)
                    .build()?,
            ),
            None,
        ),
    })
}
