//! Credentials and checkpoints as Kubernetes Secrets.
//!
//! Owns the Secret layout: data key `credentials.json` in `<statefulset>-unseal`
//! and `checkpoint.json` in `<statefulset>-unseal-checkpoint`, labelled as
//! managed by kubectl-vault and never owned by another object (an owner, such
//! as a hook Job, would garbage-collect them). Writes use optimistic
//! concurrency: replace carries the resourceVersion that was read.

use crate::ops::checkpoint::{Checkpoint, CHECKPOINT_SCHEMA};
use crate::ops::credentials::Credentials;
use crate::ops::secret::SecretBytes;
use crate::ops::store::{CredentialStore, StoreError};
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use std::collections::BTreeMap;

pub const CREDENTIALS_KEY: &str = "credentials.json";
pub const CHECKPOINT_KEY: &str = "checkpoint.json";
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "kubectl-vault");

/// The default credentials Secret name for a StatefulSet.
pub fn default_secret_name(statefulset: &str) -> String {
    format!("{statefulset}-unseal")
}

pub struct SecretStore {
    api: Api<KubeSecret>,
    namespace: String,
    name: String,
    checkpoint: String,
}

impl SecretStore {
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        SecretStore {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            checkpoint: format!("{name}-checkpoint"),
        }
    }

    fn object(&self, name: &str) -> String {
        format!("Secret {}/{}", self.namespace, name)
    }

    async fn read(
        &self,
        name: &str,
        key: &str,
    ) -> Result<Option<(KubeSecret, SecretBytes)>, StoreError> {
        match self.api.get_opt(name).await {
            Ok(None) => Ok(None),
            Ok(Some(secret)) => {
                let bytes = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|b| SecretBytes::new(b.0.clone()))
                    .ok_or_else(|| StoreError::Corrupt {
                        object: self.object(name),
                        reason: format!("it has no data key {key}"),
                    })?;
                Ok(Some((secret, bytes)))
            }
            Err(e) => Err(self.error(name, "get", e)),
        }
    }

    /// Creates the Secret, or replaces it with the resourceVersion just read.
    async fn write(&self, name: &str, key: &str, bytes: SecretBytes) -> Result<(), StoreError> {
        let existing = self
            .api
            .get_opt(name)
            .await
            .map_err(|e| self.error(name, "get", e))?;
        let mut data = BTreeMap::new();
        data.insert(key.to_owned(), ByteString(bytes.expose().to_vec()));
        let secret = KubeSecret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([(
                    MANAGED_BY.0.to_owned(),
                    MANAGED_BY.1.to_owned(),
                )])),
                resource_version: existing
                    .as_ref()
                    .and_then(|s| s.metadata.resource_version.clone()),
                annotations: existing
                    .as_ref()
                    .and_then(|s| s.metadata.annotations.clone()),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".to_owned()),
            data: Some(data),
            ..KubeSecret::default()
        };
        let result = match existing {
            Some(_) => self
                .api
                .replace(name, &PostParams::default(), &secret)
                .await
                .map(drop),
            None => self
                .api
                .create(&PostParams::default(), &secret)
                .await
                .map(drop),
        };
        result.map_err(|e| self.error(name, "write", e))
    }

    fn error(&self, name: &str, verb: &'static str, e: kube::Error) -> StoreError {
        let object = self.object(name);
        match e {
            kube::Error::Api(s) if s.code == 403 => StoreError::Forbidden {
                object,
                verb,
                reason: s.message,
            },
            kube::Error::Api(s) if s.code == 409 => StoreError::Conflict { object },
            other => StoreError::Unavailable {
                object,
                verb,
                reason: other.to_string(),
            },
        }
    }
}

impl CredentialStore for SecretStore {
    fn credentials_object(&self) -> String {
        self.object(&self.name)
    }

    fn checkpoint_object(&self) -> String {
        self.object(&self.checkpoint)
    }

    async fn load_credentials(&self) -> Result<Option<Credentials>, StoreError> {
        let Some((_, bytes)) = self.read(&self.name, CREDENTIALS_KEY).await? else {
            return Ok(None);
        };
        let object = self.credentials_object();
        let credentials: Credentials =
            serde_json::from_slice(bytes.expose()).map_err(|e| StoreError::Corrupt {
                object: object.clone(),
                reason: format!(
                    "{CREDENTIALS_KEY} is not a credentials document: {}",
                    e.classify_name()
                ),
            })?;
        credentials.validate().map_err(|e| StoreError::Corrupt {
            object,
            reason: e.to_string(),
        })?;
        Ok(Some(credentials))
    }

    async fn save_credentials(&self, credentials: &Credentials) -> Result<(), StoreError> {
        let bytes = SecretBytes::json(credentials).map_err(|e| StoreError::Corrupt {
            object: self.credentials_object(),
            reason: e.to_string(),
        })?;
        self.write(&self.name, CREDENTIALS_KEY, bytes).await
    }

    async fn load_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let Some((_, bytes)) = self.read(&self.checkpoint, CHECKPOINT_KEY).await? else {
            return Ok(None);
        };
        let object = self.checkpoint_object();
        let value: serde_json::Value =
            serde_json::from_slice(bytes.expose()).map_err(|e| StoreError::Corrupt {
                object: object.clone(),
                reason: format!("{CHECKPOINT_KEY} is not JSON: {}", e.classify_name()),
            })?;
        let schema = value.get("schema").and_then(serde_json::Value::as_u64);
        if schema != Some(u64::from(CHECKPOINT_SCHEMA)) {
            return Err(StoreError::Corrupt { object, reason: format!("unsupported checkpoint schema {schema:?} (this build reads {CHECKPOINT_SCHEMA})") });
        }
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                object,
                reason: format!(
                    "{CHECKPOINT_KEY} does not match the checkpoint schema: {}",
                    e.classify_name()
                ),
            })
    }

    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let bytes = SecretBytes::json(checkpoint).map_err(|e| StoreError::Corrupt {
            object: self.checkpoint_object(),
            reason: e.to_string(),
        })?;
        self.write(&self.checkpoint, CHECKPOINT_KEY, bytes).await
    }

    async fn delete_checkpoint(&self) -> Result<(), StoreError> {
        match self
            .api
            .delete(&self.checkpoint, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(self.error(&self.checkpoint, "delete", e)),
        }
    }
}

/// Names a serde_json error by category only: its message could quote a secret.
trait ClassifyName {
    fn classify_name(&self) -> String;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> String {
        let kind = match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "wrong fields or types",
            serde_json::error::Category::Eof => "truncated JSON",
        };
        format!("{kind} at line {} column {}", self.line(), self.column())
    }
}
