//! Credentials and checkpoints as Kubernetes Secrets.
//!
//! Owns the Secret layout: data key `credentials.json` in `<statefulset>-unseal`
//! and `checkpoint.json` in `<statefulset>-unseal-checkpoint`, labelled as
//! managed by kubectl-vault and never owned by another object (an owner, such
//! as a hook Job, would garbage-collect them). Writes use optimistic
//! concurrency: replace carries the resourceVersion that was read.
//!
//! Both documents go through the [`Envelope`]: plaintext JSON, or SOPS/age
//! encrypted JSON with the recipients recorded in the annotation
//! [`RECIPIENTS_ANNOTATION`] of the same Secret (one write, so the data and the
//! annotation never disagree).

use crate::ops::checkpoint::{Checkpoint, CHECKPOINT_SCHEMA};
use crate::ops::credentials::Credentials;
use crate::ops::secret::SecretBytes;
use crate::ops::store::{CredentialStore, StoreError};
use crate::store::envelope::{
    format_recipients, parse_recipients, Envelope, Opened, Sealing, RECIPIENTS_ANNOTATION,
};
use crate::store::sops::{self, Format, Recipient};
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, Preconditions};
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
    envelope: Envelope,
    /// The resourceVersion this run last read or wrote, per Secret name
    /// (`None`: seen absent). A write carries it, so a write based on a stale
    /// read fails instead of overwriting what another run stored since.
    observed: std::sync::Mutex<BTreeMap<String, Option<String>>>,
}

impl SecretStore {
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        SecretStore {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            checkpoint: format!("{name}-checkpoint"),
            envelope: Envelope::default(),
            observed: std::sync::Mutex::default(),
        }
    }

    fn observe(&self, name: &str, version: Option<String>) {
        self.observed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_owned(), version);
    }

    /// `Some(version)` when this run has seen `name` (`Some(None)`: absent).
    fn observed(&self, name: &str) -> Option<Option<String>> {
        self.observed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    fn fence(&self, name: &str) -> Result<(), StoreError> {
        crate::store::lease::check_fence().map_err(|e| StoreError::Fenced {
            object: self.object(name),
            reason: e.to_string(),
        })
    }

    /// Seals and opens documents with `envelope` (default: inherit the stored
    /// recipients, open with the sops environment).
    pub fn with_envelope(self, envelope: Envelope) -> Self {
        SecretStore { envelope, ..self }
    }

    /// The same store, writing with another policy (`credentials encrypt|decrypt`).
    pub fn with_sealing(self, sealing: Sealing) -> Self {
        let envelope = self.envelope.with_sealing(sealing);
        SecretStore { envelope, ..self }
    }

    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The recipients the next write is encrypted for; empty means plaintext.
    pub async fn write_recipients(&self) -> Result<Vec<Recipient>, StoreError> {
        Ok(self.recipients_over(self.recorded_recipients().await?))
    }

    /// What the sealing policy makes of the recipients already `recorded`.
    fn recipients_over(&self, recorded: Vec<Recipient>) -> Vec<Recipient> {
        match self.envelope.sealing() {
            Sealing::Encrypt(recipients) => recipients.clone(),
            Sealing::Plaintext => Vec::new(),
            Sealing::Inherit => recorded,
            Sealing::InheritOr(fallback) if recorded.is_empty() => fallback.clone(),
            Sealing::InheritOr(_) => recorded,
        }
    }

    /// The recipients the stored documents are really encrypted for (their
    /// own sops metadata, checked against the annotation): the credentials
    /// Secret's, or (when it does not exist yet) the checkpoint's of an
    /// interrupted init. Empty for plaintext.
    pub async fn recorded_recipients(&self) -> Result<Vec<Recipient>, StoreError> {
        for (name, key) in [
            (&self.name, CREDENTIALS_KEY),
            (&self.checkpoint, CHECKPOINT_KEY),
        ] {
            let Some(secret) = self
                .api
                .get_opt(name)
                .await
                .map_err(|e| self.error(name, "get", e))?
            else {
                continue;
            };
            // What the document is really encrypted for decides, never the
            // annotation alone: patching an annotation adds no reader.
            return self.pinned_recipients(name, key, &secret);
        }
        Ok(Vec::new())
    }

    /// The recipients `key` of `secret` is encrypted for (empty: plaintext),
    /// checked against the annotation: an annotation that lists others, or
    /// plaintext under an annotation, is tampering.
    fn pinned_recipients(
        &self,
        name: &str,
        key: &str,
        secret: &KubeSecret,
    ) -> Result<Vec<Recipient>, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            object: self.object(name),
            reason,
        };
        let text = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|b| std::str::from_utf8(&b.0).ok())
            .unwrap_or_default();
        let encrypted = sops::is_encrypted(text, Format::Json);
        let in_document: Vec<Recipient> = if encrypted {
            sops::recipients(text, Format::Json)
                .unwrap_or_default()
                .iter()
                .map(|r| Recipient::parse(r))
                .collect::<Result<_, _>>()
                .map_err(|e| corrupt(format!("{key} lists an invalid recipient: {e}")))?
        } else {
            Vec::new()
        };
        let Some(value) = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RECIPIENTS_ANNOTATION))
        else {
            return Ok(in_document);
        };
        let annotated = parse_recipients(value).map_err(|e| {
            corrupt(format!(
                "its annotation {RECIPIENTS_ANNOTATION} is invalid: {e}"
            ))
        })?;
        if !encrypted {
            return Err(corrupt(format!("its annotation {RECIPIENTS_ANNOTATION} says {key} is encrypted, but it is plaintext; refusing it as tampered")));
        }
        if !same_recipients(&annotated, &in_document) {
            return Err(corrupt(format!(
                "its annotation {RECIPIENTS_ANNOTATION} lists [{}] but {key} is encrypted for [{}]; refusing it as tampered (was the annotation edited?)",
                format_recipients(&annotated),
                format_recipients(&in_document)
            )));
        }
        Ok(in_document)
    }

    /// The credentials document and the recipients it is encrypted for
    /// (empty when it is plaintext), or `None` when there is none.
    pub async fn load_credentials_opened(
        &self,
    ) -> Result<Option<(Credentials, Vec<String>)>, StoreError> {
        let Some((_, bytes)) = self.read(&self.name, CREDENTIALS_KEY).await? else {
            return Ok(None);
        };
        let object = self.credentials_object();
        let Opened { plain, recipients } =
            self.envelope.open(&bytes, &object, CREDENTIALS_KEY).await?;
        let credentials: Credentials =
            serde_json::from_slice(plain.expose()).map_err(|e| StoreError::Corrupt {
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
        Ok(Some((credentials, recipients)))
    }

    /// Seals `plain` for the write recipients and writes it with the matching
    /// annotation. Refuses to encrypt for recipients no identity here holds:
    /// the read-back that proves a write would fail, and a mistyped recipient
    /// would lock the keys away for good.
    async fn seal_and_write(
        &self,
        name: &str,
        key: &str,
        plain: &SecretBytes,
    ) -> Result<(), StoreError> {
        let object = self.object(name);
        let recorded = self.recorded_recipients().await?;
        let recipients = self.recipients_over(recorded.clone());
        if !recorded.is_empty()
            && !same_recipients(&recorded, &recipients)
            && !self.envelope.recipients_change_allowed()
        {
            return Err(StoreError::RecipientsPinned {
                object,
                recorded: format_recipients(&recorded).replace(',', ", "),
                requested: format_recipients(&recipients).replace(',', ", "),
            });
        }
        if !recipients.is_empty() && !self.envelope.holds_any(&recipients, &object).await? {
            let sources = self
                .envelope
                .identities(&object)
                .await?
                .sources()
                .join("; ");
            return Err(StoreError::Unverifiable {
                object,
                reason: format!(
                    "no age identity available here opens documents for [{}] (looked in: {sources}), so what is written could not be read back and checked; pass --age-identity FILE (or set SOPS_AGE_KEY_FILE) with the key of one of those recipients",
                    format_recipients(&recipients).replace(',', ", ")
                ),
            });
        }
        let sealed = Envelope::seal(plain, &recipients, &object)?;
        match self.write(name, key, sealed, &recipients).await {
            Err(StoreError::Conflict { object }) => {
                self.after_conflict(name, key, plain, object).await
            }
            other => other,
        }
    }

    /// A conditional write was refused. When the object already holds what
    /// this run was writing (an earlier attempt landed but its answer was
    /// lost), that is success; when it still holds what this run read, the
    /// conflict was passing and a retry may go through; otherwise another
    /// run wrote since, and this run must not overwrite it.
    async fn after_conflict(
        &self,
        name: &str,
        key: &str,
        plain: &SecretBytes,
        object: String,
    ) -> Result<(), StoreError> {
        let expected = self.observed(name).flatten();
        let current = self
            .api
            .get_opt(name)
            .await
            .map_err(|e| self.error(name, "get", e))?;
        let version = current
            .as_ref()
            .and_then(|s| s.metadata.resource_version.clone());
        if version == expected {
            return Err(StoreError::Conflict { object });
        }
        let bytes = current
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .and_then(|d| d.get(key))
            .map(|b| SecretBytes::new(b.0.clone()));
        if let Some(bytes) = bytes {
            if let Ok(opened) = self.envelope.open(&bytes, &object, key).await {
                if opened.plain.expose() == plain.expose() {
                    self.observe(name, version);
                    return Ok(());
                }
            }
        }
        Err(StoreError::Superseded { object })
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
            Ok(None) => {
                self.observe(name, None);
                Ok(None)
            }
            Ok(Some(secret)) => {
                self.observe(name, secret.metadata.resource_version.clone());
                let bytes = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|b| SecretBytes::new(b.0.clone()))
                    .ok_or_else(|| StoreError::Corrupt {
                        object: self.object(name),
                        reason: format!("it has no data key {key}"),
                    })?;
                self.pinned_recipients(name, key, &secret)?;
                Ok(Some((secret, bytes)))
            }
            Err(e) => Err(self.error(name, "get", e)),
        }
    }

    /// Creates the Secret, or replaces it with the resourceVersion just read;
    /// records `recipients` in the annotation (removes it when empty).
    async fn write(
        &self,
        name: &str,
        key: &str,
        bytes: SecretBytes,
        recipients: &[Recipient],
    ) -> Result<(), StoreError> {
        self.fence(name)?;
        let existing = self
            .api
            .get_opt(name)
            .await
            .map_err(|e| self.error(name, "get", e))?;
        // The version this run based its write on; the current one only for
        // an object it never read.
        let version = match self.observed(name) {
            Some(v) => v,
            None => existing
                .as_ref()
                .and_then(|s| s.metadata.resource_version.clone()),
        };
        let mut annotations = existing
            .as_ref()
            .and_then(|s| s.metadata.annotations.clone())
            .unwrap_or_default();
        if recipients.is_empty() {
            annotations.remove(RECIPIENTS_ANNOTATION);
        } else {
            annotations.insert(
                RECIPIENTS_ANNOTATION.to_owned(),
                format_recipients(recipients),
            );
        }
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
                resource_version: version.clone(),
                annotations: Some(annotations).filter(|a| !a.is_empty()),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".to_owned()),
            data: Some(data),
            ..KubeSecret::default()
        };
        let result = match version {
            Some(_) => {
                self.api
                    .replace(name, &PostParams::default(), &secret)
                    .await
            }
            None => self.api.create(&PostParams::default(), &secret).await,
        };
        match result {
            Ok(written) => {
                self.observe(name, written.metadata.resource_version);
                Ok(())
            }
            Err(e) => Err(self.error(name, "write", e)),
        }
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
                reason: crate::transport::api_reason(&other),
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
        Ok(self.load_credentials_opened().await?.map(|(c, _)| c))
    }

    async fn save_credentials(&self, credentials: &Credentials) -> Result<(), StoreError> {
        let bytes = SecretBytes::json(credentials).map_err(|e| StoreError::Corrupt {
            object: self.credentials_object(),
            reason: e.to_string(),
        })?;
        self.seal_and_write(&self.name, CREDENTIALS_KEY, &bytes)
            .await
    }

    async fn load_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let Some((_, bytes)) = self.read(&self.checkpoint, CHECKPOINT_KEY).await? else {
            return Ok(None);
        };
        let object = self.checkpoint_object();
        let Opened { plain: bytes, .. } =
            self.envelope.open(&bytes, &object, CHECKPOINT_KEY).await?;
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
        self.seal_and_write(&self.checkpoint, CHECKPOINT_KEY, &bytes)
            .await
    }

    async fn delete_checkpoint(&self) -> Result<(), StoreError> {
        self.fence(&self.checkpoint)?;
        let params = DeleteParams {
            preconditions: self
                .observed(&self.checkpoint)
                .flatten()
                .map(|v| Preconditions {
                    resource_version: Some(v),
                    uid: None,
                }),
            ..DeleteParams::default()
        };
        match self.api.delete(&self.checkpoint, &params).await {
            Ok(_) => {
                self.observe(&self.checkpoint, None);
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(self.error(&self.checkpoint, "delete", e)),
        }
    }
}

/// The same recipients, in any order.
fn same_recipients(a: &[Recipient], b: &[Recipient]) -> bool {
    a.len() == b.len() && a.iter().all(|r| b.contains(r))
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
