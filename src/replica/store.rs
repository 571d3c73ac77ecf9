//! The bucket: an `object_store` S3 client configured the way the AWS
//! tools are (environment variables, then `~/.aws/credentials` and
//! `~/.aws/config`), driven from synchronous code on a runtime of its own.

use bytes::Bytes;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjPath;
use object_store::{
    ClientConfigKey, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
    UpdateVersion,
};
use std::sync::Arc;
use std::time::Duration;

/// What went wrong talking to the bucket, as far as a caller cares.
#[derive(Debug)]
pub enum Fault {
    /// No such object.
    NotFound,
    /// A conditional write lost: someone else wrote first.
    Conflict,
    /// The bucket refused us (credentials, policy) or does not exist: no
    /// retry helps.
    Refused(String),
    /// The network or the server failed: retrying later may help.
    Transport(String),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::NotFound => f.write_str("not found"),
            Fault::Conflict => f.write_str("a conditional write lost to another writer"),
            Fault::Refused(m) | Fault::Transport(m) => f.write_str(m),
        }
    }
}

fn fault(e: object_store::Error) -> Fault {
    use object_store::Error as E;
    let m = short(&e);
    if m.contains("169.254.169.254") || m.contains("instance metadata") || m.contains("IMDS") {
        // Nothing configured: the client fell back to the instance
        // metadata service, which answers only on a cloud instance.
        return Fault::Refused("no AWS credentials found: looked for AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile in ~/.aws/credentials (AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE), a web identity token, and the instance metadata service (no answer: not a cloud instance); set the two variables, or a profile".into());
    }
    match e {
        E::NotFound { .. } => Fault::NotFound,
        E::Precondition { .. } | E::AlreadyExists { .. } => Fault::Conflict,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
            Fault::Refused(format!("the bucket refused access ({}); check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or ~/.aws/credentials)", short(&e)))
        }
        e => {
            let m = short(&e);
            if m.contains("NoSuchBucket") {
                Fault::Refused("the bucket does not exist; create it first".into())
            } else if m.contains("InvalidAccessKeyId") || m.contains("SignatureDoesNotMatch") {
                Fault::Refused(format!("the bucket refused the credentials ({m}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"))
            } else {
                Fault::Transport(m)
            }
        }
    }
}

/// The error's text, on one line and bounded (a server may send a page).
fn short(e: &object_store::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    let mut s = s.replace(['\n', '\r'], " ");
    if s.len() > 400 {
        let mut cut = 400;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// `s3://BUCKET/PREFIX`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketUrl {
    /// The bucket.
    pub bucket: String,
    /// The prefix inside it, without slashes at either end (may be empty).
    pub prefix: String,
}

impl BucketUrl {
    /// Parses `s3://BUCKET[/PREFIX]`.
    pub fn parse(url: &str) -> Result<BucketUrl, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url:?} is not a bucket address: use s3://BUCKET/PREFIX"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{url:?} names no bucket: use s3://BUCKET/PREFIX"));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == ".." || p == ".") {
            return Err(format!("{url:?}: the prefix may not contain . or .."));
        }
        Ok(BucketUrl {
            bucket: bucket.into(),
            prefix: prefix.into(),
        })
    }

    /// Whether `s` looks like a bucket address rather than a path.
    pub fn is_bucket(s: &str) -> bool {
        s.starts_with("s3://")
    }
}

impl std::fmt::Display for BucketUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// Settings from `~/.aws/credentials` and `~/.aws/config` for the profile
/// in `AWS_PROFILE` (default `default`), for keys the environment leaves
/// unset, as the AWS CLI and SDKs read them.
fn shared_files() -> Vec<(AmazonS3ConfigKey, String)> {
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let file = |var: &str, default: &str| {
        std::env::var_os(var)
            .map(std::path::PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))
    };
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let mut out = Vec::new();
    let mut take = |path: Option<std::path::PathBuf>, section: String| {
        let Some(ini) = path.and_then(|p| ini::Ini::load_from_file(p).ok()) else {
            return;
        };
        let Some(props) = ini.section(Some(section)) else {
            return;
        };
        for (k, v) in props.iter() {
            let key = match k {
                "aws_access_key_id" => AmazonS3ConfigKey::AccessKeyId,
                "aws_secret_access_key" => AmazonS3ConfigKey::SecretAccessKey,
                "aws_session_token" => AmazonS3ConfigKey::Token,
                "region" => AmazonS3ConfigKey::Region,
                "endpoint_url" => AmazonS3ConfigKey::Endpoint,
                _ => continue,
            };
            out.push((key, v.to_owned()));
        }
    };
    take(
        file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
        profile.clone(),
    );
    let config_section = if profile == "default" {
        profile
    } else {
        format!("profile {profile}")
    };
    take(file("AWS_CONFIG_FILE", "config"), config_section);
    out
}

/// The environment variable that overrides each file setting.
fn env_name(key: &AmazonS3ConfigKey) -> &'static [&'static str] {
    match key {
        AmazonS3ConfigKey::AccessKeyId => &["AWS_ACCESS_KEY_ID"],
        AmazonS3ConfigKey::SecretAccessKey => &["AWS_SECRET_ACCESS_KEY"],
        AmazonS3ConfigKey::Token => &["AWS_SESSION_TOKEN"],
        AmazonS3ConfigKey::Region => &["AWS_REGION", "AWS_DEFAULT_REGION"],
        AmazonS3ConfigKey::Endpoint => &["AWS_ENDPOINT_URL", "AWS_ENDPOINT"],
        _ => &[],
    }
}

/// Makes ring rustls's process-wide crypto provider (once; a provider the
/// program installed itself is left alone): the client is built without
/// one, so that the TLS library compiles no C beyond ring's.
fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A connection to one prefix of one bucket.
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    /// The address, for messages.
    pub url: BucketUrl,
    rt: tokio::runtime::Runtime,
}

impl Bucket {
    /// Builds the client (no request is made). `timeout` bounds each
    /// request, retries included.
    pub fn open(
        url: &BucketUrl,
        timeout: Duration,
        settings: &[(String, String)],
    ) -> Result<Bucket, String> {
        install_tls_provider();
        let per_try = (timeout / 2).max(Duration::from_millis(500));
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        // Timeouts first, so that AWS_* variables for them still win.
        let mut b = AmazonS3Builder::new()
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                ms(per_try),
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                ms(per_try.min(Duration::from_secs(3))),
            );
        for (key, value) in shared_files() {
            if env_name(&key).iter().all(|v| std::env::var_os(v).is_none()) {
                b = b.with_config(key, value);
            }
        }
        for (k, v) in std::env::vars() {
            if k.starts_with("AWS_") {
                if let Ok(key) = k.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                    b = b.with_config(key, v);
                }
            }
        }
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_some()
        {
            b = b.with_region(std::env::var("AWS_DEFAULT_REGION").unwrap_or_default());
        }
        for (k, v) in settings {
            let key = k
                .to_ascii_lowercase()
                .parse::<AmazonS3ConfigKey>()
                .map_err(|_| format!("{k:?} is not an S3 setting (use the names of object_store's AmazonS3ConfigKey, such as aws_endpoint)"))?;
            b = b.with_config(key, v);
        }
        // A plain-HTTP endpoint the client would refuse request by request
        // (so shipping would wait forever for a bucket that never answers):
        // refused here, in one line.
        let endpoint = b.get_config_value(&AmazonS3ConfigKey::Endpoint);
        let allow_http = b
            .get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if let Some(e) = endpoint.filter(|e| e.starts_with("http://") && !allow_http) {
            return Err(format!(
                "the endpoint {e} is plain HTTP, which is refused unless AWS_ALLOW_HTTP=true is set (or use https://)"
            ));
        }
        let store = b
            .with_bucket_name(&url.bucket)
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: timeout,
                ..Default::default()
            })
            .build()
            .map_err(|e| format!("cannot use {url}: {}", short(&e)))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the object storage runtime: {e}"))?;
        Ok(Bucket {
            store: Arc::new(store),
            url: url.clone(),
            rt,
        })
    }

    /// A bucket in memory holding `objects` (key, bytes), for unit tests
    /// of what reads a bucket.
    #[cfg(test)]
    pub(crate) fn in_memory(objects: &[(&str, Vec<u8>)]) -> Bucket {
        let b = Bucket {
            store: Arc::new(object_store::memory::InMemory::new()),
            url: BucketUrl::parse("s3://memory/p").unwrap(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        };
        for (key, bytes) in objects {
            let path = b.path(key);
            b.rt.block_on(b.store.put(&path, bytes.clone().into()))
                .unwrap();
        }
        b
    }

    fn path(&self, key: &str) -> ObjPath {
        if self.url.prefix.is_empty() {
            ObjPath::from(key)
        } else {
            ObjPath::from(format!("{}/{key}", self.url.prefix))
        }
    }

    /// The manifest and its version, or None when the prefix has none. A
    /// manifest over [`super::manifest::MAX_MANIFEST_BYTES`] is refused
    /// before its body is read.
    pub fn get_manifest(&self) -> Result<Option<(Bytes, UpdateVersion)>, Fault> {
        let path = self.path(super::manifest::MANIFEST);
        let too_big = |n: u64| {
            Fault::Refused(format!(
                "{}: the manifest is {n} bytes, over the {} walfs reads (about {} segments; a manifest that large is not one walfs wrote)",
                self.url,
                super::manifest::MAX_MANIFEST_BYTES,
                super::manifest::MAX_MANIFEST_BYTES / 400
            ))
        };
        self.rt.block_on(async {
            match self.store.get(&path).await {
                Ok(r) => {
                    if r.meta.size > super::manifest::MAX_MANIFEST_BYTES {
                        return Err(too_big(r.meta.size));
                    }
                    let version = UpdateVersion {
                        e_tag: r.meta.e_tag.clone(),
                        version: r.meta.version.clone(),
                    };
                    let bytes = r.bytes().await.map_err(fault)?;
                    if bytes.len() as u64 > super::manifest::MAX_MANIFEST_BYTES {
                        return Err(too_big(bytes.len() as u64));
                    }
                    Ok(Some((bytes, version)))
                }
                Err(e) => match fault(e) {
                    Fault::NotFound => Ok(None),
                    f => Err(f),
                },
            }
        })
    }

    /// Writes the manifest if it is still at `expected` (or absent, for
    /// None); returns the new version.
    pub fn put_manifest(
        &self,
        bytes: Vec<u8>,
        expected: Option<UpdateVersion>,
    ) -> Result<UpdateVersion, Fault> {
        let path = self.path(super::manifest::MANIFEST);
        let mode = match expected {
            Some(v) => PutMode::Update(v),
            None => PutMode::Create,
        };
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        self.rt.block_on(async {
            let r = self
                .store
                .put_opts(&path, PutPayload::from(bytes), opts)
                .await
                .map_err(fault)?;
            Ok(UpdateVersion {
                e_tag: r.e_tag,
                version: r.version,
            })
        })
    }

    /// Writes immutable objects, all at once.
    pub fn put_all(&self, objects: Vec<(String, Bytes)>) -> Result<(), Fault> {
        use futures::stream::{StreamExt, TryStreamExt};
        self.rt.block_on(async {
            futures::stream::iter(objects.into_iter().map(|(key, body)| {
                let path = self.path(&key);
                async move {
                    self.store
                        .put(&path, PutPayload::from_bytes(body))
                        .await
                        .map(|_| ())
                        .map_err(fault)
                }
            }))
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
        })
    }

    /// Reads whole objects, up to 8 at a time, handing each to `each` in
    /// their order with its index, checked against the manifest (length and
    /// crc32: `Err` says what differs; a body longer than the manifest says
    /// is never read into memory). A request that fails is an error.
    pub fn get_all(
        &self,
        objects: &[super::manifest::ObjectRef],
        mut each: impl FnMut(usize, Result<Bytes, String>) -> Result<(), String>,
    ) -> Result<(), String> {
        use futures::stream::StreamExt;
        self.rt.block_on(async {
            let mut s = futures::stream::iter(objects.iter().enumerate().map(|(i, o)| {
                let path = self.path(&o.key);
                async move {
                    let r = match self.store.get(&path).await {
                        Ok(r) if r.meta.size != o.len => Ok(Err(format!(
                            "object {} is {} bytes, the manifest says {}",
                            o.key, r.meta.size, o.len
                        ))),
                        Ok(r) => r.bytes().await.map(|b| o.check(&b).map(|()| b)),
                        Err(e) => Err(e),
                    };
                    (i, r)
                }
            }))
            .buffered(8);
            while let Some((i, r)) = s.next().await {
                let checked = r.map_err(|e| format!("{}: {}", objects[i].key, fault(e)))?;
                each(i, checked)?;
            }
            Ok(())
        })
    }

    /// Bytes `range` of an object: exactly that many, or an error naming
    /// the object (a server that answers short must not make a reader wait
    /// for bytes that never come).
    pub fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Bytes, Fault> {
        let path = self.path(key);
        let r = range.clone();
        let got = self
            .rt
            .block_on(async { self.store.get_range(&path, range).await.map_err(fault) })?;
        self.check_len(key, &r, &got)?;
        Ok(got)
    }

    fn check_len(&self, key: &str, r: &std::ops::Range<u64>, got: &Bytes) -> Result<(), Fault> {
        if got.len() as u64 == r.end - r.start {
            return Ok(());
        }
        Err(Fault::Refused(format!(
            "object {key} answered {} bytes for bytes {}..{} ({} asked): it is shorter than the manifest says, or changed",
            got.len(),
            r.start,
            r.end,
            r.end - r.start
        )))
    }

    /// Several ranges of one object (adjacent ones fetched together).
    pub fn get_ranges(
        &self,
        key: &str,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<Bytes>, Fault> {
        let path = self.path(key);
        let got = self
            .rt
            .block_on(async { self.store.get_ranges(&path, ranges).await.map_err(fault) })?;
        if got.len() != ranges.len() {
            return Err(Fault::Refused(format!(
                "object {key} answered {} ranges of {}",
                got.len(),
                ranges.len()
            )));
        }
        for (r, g) in ranges.iter().zip(&got) {
            self.check_len(key, r, g)?;
        }
        Ok(got)
    }

    /// Deletes objects, ignoring those already gone.
    pub fn delete_all(&self, keys: Vec<String>) -> Result<(), Fault> {
        use futures::stream::{StreamExt, TryStreamExt};
        self.rt.block_on(async {
            futures::stream::iter(keys.into_iter().map(|key| {
                let path = self.path(&key);
                async move {
                    match self.store.delete(&path).await.map_err(fault) {
                        Ok(()) | Err(Fault::NotFound) => Ok(()),
                        Err(f) => Err(f),
                    }
                }
            }))
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
        })
    }

    /// Every key under the prefix (relative to it), with when it was last
    /// written.
    pub fn list_modified(&self) -> Result<Vec<(String, std::time::SystemTime)>, Fault> {
        use futures::stream::TryStreamExt;
        let prefix = (!self.url.prefix.is_empty()).then(|| ObjPath::from(self.url.prefix.as_str()));
        let strip = if self.url.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.url.prefix)
        };
        self.rt.block_on(async {
            let metas: Vec<_> = self
                .store
                .list(prefix.as_ref())
                .try_collect()
                .await
                .map_err(fault)?;
            Ok(metas
                .into_iter()
                .filter_map(|m| {
                    let key = m.location.as_ref().strip_prefix(&strip)?.to_owned();
                    Some((key, m.last_modified.into()))
                })
                .collect())
        })
    }

    /// Every key under the prefix (relative to it).
    pub fn list(&self) -> Result<Vec<String>, Fault> {
        Ok(self.list_modified()?.into_iter().map(|(k, _)| k).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_addresses_parse_and_bad_ones_say_why() {
        let u = BucketUrl::parse("s3://b/some/prefix/").unwrap();
        assert_eq!((u.bucket.as_str(), u.prefix.as_str()), ("b", "some/prefix"));
        assert_eq!(BucketUrl::parse("s3://b").unwrap().prefix, "");
        assert!(BucketUrl::parse("/data")
            .unwrap_err()
            .contains("s3://BUCKET/PREFIX"));
        assert!(BucketUrl::parse("s3:///x").is_err());
        assert!(BucketUrl::parse("s3://b/../x").is_err());
    }
}
