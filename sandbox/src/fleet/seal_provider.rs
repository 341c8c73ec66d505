//! The transit seal's provider (`Seal::Transit` only): started before the
//! first pod that needs it, stopped and started again by the operator. The
//! provider itself is [`crate::transit`].

use anyhow::Context;

use super::{server_binary, Fleet};

impl Fleet {
    /// Starts the transit provider before the first pod that needs it.
    /// Called with the lifecycle lock held, so it starts once.
    pub(super) async fn ensure_transit(&self) -> anyhow::Result<()> {
        if self.opts.seal != crate::seal::Seal::Transit || self.transit.get().is_some() {
            return Ok(());
        }
        let provider = crate::transit::TransitProvider::start(
            &self.dir,
            &crate::seal::secret_dir(&self.dir, &self.opts.name),
            &server_binary(&self.spec())?,
            &self.spawner,
        )
        .await
        .context("start the transit seal provider")?;
        let _ = self.transit.set(provider);
        Ok(())
    }

    /// Stops (`up = false`) or starts the transit seal provider; pods that
    /// restart meanwhile stay sealed until it is back.
    pub async fn seal_provider(&self, up: bool) -> anyhow::Result<()> {
        let provider = self
            .transit
            .get()
            .context("this cluster has no transit seal provider (up --seal transit)")?;
        if up {
            provider.up(&self.spawner).await
        } else {
            provider.down();
            Ok(())
        }
    }

    /// The transit provider's address, if this cluster has one.
    pub fn seal_provider_address(&self) -> Option<String> {
        self.transit.get().map(|p| p.address())
    }
}
