//! `userinfo_claims`: the user's standard claims from a plain OAuth 2.0 provider's own user API.
//!
//! A plain OAuth 2.0 provider (GitHub) issues no ID token and its user API is not an OpenID
//! Connect userinfo endpoint: GitHub's `/user` has a numeric `id` and a `login`, no `sub`. An SPA
//! written against `/userInfo` expects the standard claims (OIDC Core §5.1), so the
//! configuration names, per claim, the member of the provider's answer it comes from.
//!
//! The rules keep the answer predictable whatever the provider sends: `sub` is always a string
//! (OIDC Core §5.1 and §2: a case-sensitive string; a JSON number becomes its decimal text), a
//! mapped claim the provider left out, set to `null` or answered with an object or array is
//! `null`, and nothing here can fail. The provider's other members are kept as they are (the
//! answer stays a superset of the provider's, so SPAs reading `login` or `avatar_url` keep
//! working); nothing from the session is added, so no token ever appears in the answer.

use serde_json::{Map, Value};

/// The claims a mapping may set: OIDC Core §5.1's standard claims (not `address`, an object).
pub const STANDARD_CLAIMS: [&str; 18] = [
    "sub",
    "name",
    "given_name",
    "family_name",
    "middle_name",
    "nickname",
    "preferred_username",
    "profile",
    "picture",
    "website",
    "email",
    "email_verified",
    "gender",
    "birthdate",
    "zoneinfo",
    "locale",
    "phone_number",
    "updated_at",
];

/// Standard claim ← member of the provider's answer, one pair per claim. Empty: the
/// provider's answer is returned unchanged (an OpenID Connect userinfo endpoint).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfoClaims(Vec<(String, String)>);

impl UserInfoClaims {
    /// A mapping whose claim names are checked already (see the configuration).
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self(pairs)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The pairs (claim, source member), for documentation and tests.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// The provider's answer with each mapped claim set from its source member. An answer
    /// that is not a JSON object has no members: it becomes an object of `null` claims.
    pub fn normalise(&self, answer: Value) -> Value {
        if self.0.is_empty() {
            return answer;
        }
        let source = match answer {
            Value::Object(map) => map,
            _ => {
                tracing::warn!(
                    "the provider's user answer is not a JSON object; its mapped claims are null"
                );
                Map::new()
            }
        };
        let mut out = source.clone();
        for (claim, member) in &self.0 {
            let value = source
                .get(member)
                .map(|v| claim_value(claim, v))
                .unwrap_or(Value::Null);
            out.insert(claim.clone(), value);
        }
        Value::Object(out)
    }
}

/// The primary, verified address from a GitHub-style list (`[{"email", "primary",
/// "verified"}, ...]`, <https://docs.github.com/en/rest/users/emails>). An address the provider
/// has not verified is never used: it would name someone who did not prove they own it.
pub fn primary_verified_email(list: &Value) -> Option<String> {
    list.as_array()?
        .iter()
        .find(|e| e["primary"] == Value::Bool(true) && e["verified"] == Value::Bool(true))
        .and_then(|e| e["email"].as_str())
        .map(String::from)
}

/// Sets `email` (and `email_verified: true`) on an answer whose `email` is missing or `null`;
/// anything else is left alone.
pub fn fill_email(answer: &mut Value, email: String) {
    let Some(map) = answer.as_object_mut() else {
        return;
    };
    if map.get("email").is_none_or(Value::is_null) {
        map.insert("email".to_string(), Value::String(email));
        map.insert("email_verified".to_string(), Value::Bool(true));
    }
}

/// Whether the answer lacks an email address (so the emails endpoint is worth asking).
pub fn lacks_email(answer: &Value) -> bool {
    answer.is_object() && answer.get("email").is_none_or(Value::is_null)
}

/// One claim's value: `sub` is a string or `null`; other claims keep a string, number or
/// boolean (`email_verified`, `updated_at`), and a structure becomes `null`.
fn claim_value(claim: &str, value: &Value) -> Value {
    match value {
        Value::String(_) => value.clone(),
        // A number's JSON text is its decimal form (GitHub's `id`: 583231 → "583231").
        Value::Number(n) if claim == "sub" => Value::String(n.to_string()),
        Value::Number(_) | Value::Bool(_) if claim != "sub" => value.clone(),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn github() -> UserInfoClaims {
        UserInfoClaims::new(
            [
                ("sub", "id"),
                ("preferred_username", "login"),
                ("name", "name"),
                ("email", "email"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .to_vec(),
        )
    }

    #[test]
    fn a_numeric_id_becomes_a_string_sub_and_other_members_stay() {
        let out = github().normalise(json!({
            "login": "octocat", "id": 583231, "name": "The Octocat",
            "email": "octocat@github.com", "avatar_url": "https://a.example/1"
        }));
        assert_eq!(out["sub"], "583231");
        assert_eq!(out["preferred_username"], "octocat");
        assert_eq!(out["name"], "The Octocat");
        assert_eq!(out["email"], "octocat@github.com");
        assert_eq!(out["id"], 583231, "the provider's own members are kept");
        assert_eq!(out["avatar_url"], "https://a.example/1");
    }

    #[test]
    fn missing_null_or_structured_members_become_null() {
        let out = github().normalise(json!({"id": {"n": 1}, "email": null, "name": [1]}));
        assert_eq!(out["sub"], Value::Null);
        assert_eq!(out["email"], Value::Null);
        assert_eq!(out["name"], Value::Null);
        assert_eq!(out["preferred_username"], Value::Null);
        let out = github().normalise(json!({"sub": "spoofed", "id": true}));
        assert_eq!(
            out["sub"],
            Value::Null,
            "the mapping decides where sub comes from"
        );
        let out = github().normalise(json!(["not", "an", "object"]));
        assert_eq!(out["sub"], Value::Null);
        assert!(out.is_object());
    }

    #[test]
    fn only_the_primary_verified_address_fills_a_null_email() {
        let list = json!([
            {"email": "old@example.com", "primary": false, "verified": true},
            {"email": "octocat@github.com", "primary": true, "verified": true}
        ]);
        assert_eq!(
            primary_verified_email(&list).as_deref(),
            Some("octocat@github.com")
        );
        let unverified = json!([{"email": "x@example.com", "primary": true, "verified": false}]);
        assert_eq!(primary_verified_email(&unverified), None);
        assert_eq!(
            primary_verified_email(&json!({"message": "Not Found"})),
            None
        );
        let mut answer = json!({"email": null});
        assert!(lacks_email(&answer));
        fill_email(&mut answer, "a@example.com".into());
        assert_eq!(
            answer,
            json!({"email": "a@example.com", "email_verified": true})
        );
        let mut public = json!({"email": "public@example.com"});
        assert!(!lacks_email(&public));
        fill_email(&mut public, "a@example.com".into());
        assert_eq!(public["email"], "public@example.com");
    }

    #[test]
    fn without_a_mapping_the_answer_is_unchanged() {
        let answer = json!({"sub": "x", "id": 1});
        assert_eq!(UserInfoClaims::default().normalise(answer.clone()), answer);
    }

    #[test]
    fn numbers_and_booleans_stay_for_claims_other_than_sub() {
        let map = UserInfoClaims::new(vec![
            ("email_verified".into(), "verified".into()),
            ("updated_at".into(), "ts".into()),
        ]);
        let out = map.normalise(json!({"verified": true, "ts": 1700000000}));
        assert_eq!(out["email_verified"], true);
        assert_eq!(out["updated_at"], 1700000000);
    }
}
