//! Bucket administration for `s3://` storage (aws-sdk-s3): create the bucket if it is missing
//! and install the lifecycle rules that back the retention policy.
//!
//! The rules are ours by id and merged into whatever the bucket already has, so an operator's
//! own rules survive: `warren-snapshot-expiry` expires the snapshot prefix a margin after the
//! snapshot retention (the sweeper deletes them on time; the rule is the backstop), and
//! `warren-abort-multipart` aborts multipart uploads left incomplete for a day.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketLocationConstraint,
    CreateBucketConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
    LifecycleRuleFilter,
};

pub const SNAPSHOT_RULE: &str = "warren-snapshot-expiry";
pub const MULTIPART_RULE: &str = "warren-abort-multipart";
/// Days the lifecycle rule waits past the retention period, so the sweeper always acts first.
pub const MARGIN_DAYS: i32 = 7;

#[derive(Debug, thiserror::Error)]
#[error("bucket setup: {0}")]
pub struct BucketError(String);

fn err(e: impl std::fmt::Display) -> BucketError {
    BucketError(e.to_string())
}

/// What [`ensure_bucket`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketReport {
    pub created: bool,
    pub snapshot_expiry_days: i32,
}

/// An S3 client from the standard AWS environment; path-style addressing when an endpoint is
/// set (S3-compatible stores such as LocalStack and MinIO need it).
pub async fn client() -> Client {
    let conf = aws_config::load_from_env().await;
    let mut b = aws_sdk_s3::config::Builder::from(&conf);
    if std::env::var_os("AWS_ENDPOINT_URL").is_some() {
        b = b.force_path_style(true);
    }
    Client::from_conf(b.build())
}

/// Creates `bucket` if it does not exist, and installs Warren's lifecycle rules for snapshots
/// under `<root>/snapshots/`.
pub async fn ensure_bucket(
    client: &Client,
    bucket: &str,
    root: &str,
    snapshot_retention: Duration,
) -> Result<BucketReport, BucketError> {
    let created = match client.head_bucket().bucket(bucket).send().await {
        Ok(_) => false,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {
            let mut req = client.create_bucket().bucket(bucket);
            let region = client.config().region().map(|r| r.as_ref().to_owned());
            if let Some(r) = region.filter(|r| r != "us-east-1") {
                req = req.create_bucket_configuration(
                    CreateBucketConfiguration::builder()
                        .location_constraint(BucketLocationConstraint::from(r.as_str()))
                        .build(),
                );
            }
            req.send()
                .await
                .map_err(|e| err(aws_sdk_s3::error::DisplayErrorContext(e)))?;
            true
        }
        Err(e) => return Err(err(aws_sdk_s3::error::DisplayErrorContext(e))),
    };

    let days = i32::try_from(snapshot_retention.as_secs().div_ceil(86_400))
        .unwrap_or(i32::MAX - MARGIN_DAYS)
        .max(1)
        + MARGIN_DAYS;
    let root = root.trim_matches('/');
    let prefix = if root.is_empty() {
        "snapshots/".to_owned()
    } else {
        format!("{root}/snapshots/")
    };
    let ours = [
        LifecycleRule::builder()
            .id(SNAPSHOT_RULE)
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix(prefix).build())
            .expiration(LifecycleExpiration::builder().days(days).build())
            .build()
            .map_err(err)?,
        LifecycleRule::builder()
            .id(MULTIPART_RULE)
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix(root).build())
            .abort_incomplete_multipart_upload(
                AbortIncompleteMultipartUpload::builder()
                    .days_after_initiation(1)
                    .build(),
            )
            .build()
            .map_err(err)?,
    ];
    let mut rules: Vec<LifecycleRule> = match client
        .get_bucket_lifecycle_configuration()
        .bucket(bucket)
        .send()
        .await
    {
        Ok(out) => out.rules.unwrap_or_default(),
        // No configuration yet.
        Err(_) => Vec::new(),
    };
    rules.retain(|r| !matches!(r.id(), Some(SNAPSHOT_RULE | MULTIPART_RULE)));
    rules.extend(ours);
    client
        .put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .set_rules(Some(rules))
                .build()
                .map_err(err)?,
        )
        .send()
        .await
        .map_err(|e| err(aws_sdk_s3::error::DisplayErrorContext(e)))?;
    Ok(BucketReport {
        created,
        snapshot_expiry_days: days,
    })
}

/// The bucket and root of an `s3://bucket/prefix` URL; `None` for other schemes.
pub fn s3_location(url: &str) -> Option<(String, String)> {
    let parsed = url::Url::parse(url).ok()?;
    if parsed.scheme() != "s3" {
        return None;
    }
    let bucket = parsed.host_str().filter(|b| !b.is_empty())?.to_owned();
    Some((bucket, parsed.path().trim_matches('/').to_owned()))
}
