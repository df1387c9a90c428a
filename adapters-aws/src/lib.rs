//! AWS adapters for Rookery's ports (DynamoDB, DynamoDB Streams, CloudSearch, SNS, S3 and CloudFront, Cognito).
//!
//! Not built yet: this crate exists so the workspace has its final shape; the adapters arrive with their own issue.

pub mod jwt;
