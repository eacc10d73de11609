//! Types shared by several resources.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every chop resource.
pub const GROUP: &str = "chop.dev";
/// API version of every chop resource.
pub const VERSION: &str = "v1alpha1";

/// A reference to another object of a known kind in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    /// Name of the object, in the same namespace as the referring object.
    pub name: String,
}

/// A key in a Secret in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Name of the Secret, in the same namespace.
    pub name: String,
    /// Key inside the Secret's data.
    pub key: String,
}

/// A distinguished name, written in X.509 order (country first). chop encodes
/// `country` and `serialNumber` as PrintableString and the other attributes as
/// UTF8String, so Chinese names work (CPS §3.1.5, §7.1.4).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DistinguishedName {
    /// Country (C): two upper-case letters, e.g. `TW`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Z]{2}$"))]
    pub country: Option<String>,
    /// Organization (O), e.g. `行政院`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub organization: Option<String>,
    /// Organizational units (OU), in order, e.g. `[內政部憑證管理中心]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub organizational_units: Vec<String>,
    /// Common name (CN), e.g. the CA's name or the subscriber's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub common_name: Option<String>,
}

/// Status conditions with the object generation they describe.
pub type Conditions = Vec<Condition>;

/// Signing key algorithm and size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeySpec {
    /// `RSA` or `ECDSA`.
    pub algorithm: KeyAlgorithm,
    /// RSA modulus bits (2048, 3072, 4096) or ECDSA curve size (256, 384, 521).
    #[schemars(range(min = 256, max = 16384))]
    pub size: i32,
}

impl Default for KeySpec {
    /// RSA 2048, the CPS default for CA keys (§6.1.5).
    fn default() -> Self {
        KeySpec {
            algorithm: KeyAlgorithm::Rsa,
            size: 2048,
        }
    }
}

/// Key algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum KeyAlgorithm {
    /// RSA with PKCS#1 v1.5 signatures.
    #[serde(rename = "RSA")]
    Rsa,
    /// ECDSA on a NIST curve.
    #[serde(rename = "ECDSA")]
    Ecdsa,
}
