//! Users, passwords, sessions and tokens.
//!
//! Passwords are hashed with argon2id at OWASP's parameters (19 MiB, t = 2,
//! p = 1). Logging in gives a short-lived access token (a JWT, HS256 only,
//! with issuer, audience and expiry checked, RFC 8725) and a refresh token
//! (random, stored only as a hash) that is replaced on every use; presenting
//! a replaced refresh token again revokes its whole family. Every access
//! token names its session, and the session is checked on every request, so
//! logout and revocation take effect at once. Expiry, lockouts and rate
//! limits use wall-clock time, never the business clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use xianlu_domain::wire::Actor;
use xianlu_domain::{CourierId, CustomerId, MerchantId, OrderId, WarehouseId};

use crate::clock::wall_now;
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::{on_db, on_db_write};

pub const ISSUER: &str = "xianlu";
pub const AUDIENCE: &str = "xianlu-api";
/// Failed logins in a row that lock an account.
pub const LOCK_AFTER: i64 = 5;
pub const LOCK_MINUTES: i64 = 15;
/// Login attempts per address per minute.
pub const ATTEMPTS_PER_ADDRESS: u32 = 20;
/// A refresh token presented again this soon after it was exchanged is a
/// client whose answer was lost on the way (a phone in a tunnel), not a
/// thief: it gets a new pair, and the pair it never received is revoked.
pub const REFRESH_REUSE_GRACE_SECS: i64 = 30;

/// What a user is, which decides what it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    MerchantOwner,
    MerchantStaff,
    WarehouseClerk,
    Courier,
    Customer,
    CustomerService,
    /// Whoever holds a tracking link: one order, phones masked. Never a
    /// user's role.
    #[serde(skip_deserializing)]
    Visitor,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Admin,
        Role::MerchantOwner,
        Role::MerchantStaff,
        Role::WarehouseClerk,
        Role::Courier,
        Role::Customer,
        Role::CustomerService,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::MerchantOwner => "merchant_owner",
            Role::MerchantStaff => "merchant_staff",
            Role::WarehouseClerk => "warehouse_clerk",
            Role::Courier => "courier",
            Role::Customer => "customer",
            Role::CustomerService => "customer_service",
            Role::Visitor => "visitor",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// Roles that work for one merchant.
    pub fn needs_merchant(self) -> bool {
        matches!(self, Role::MerchantOwner | Role::MerchantStaff | Role::WarehouseClerk | Role::CustomerService)
    }
}

/// A new user, as an admin creates one.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub role: Role,
    #[serde(default)]
    pub merchant_id: Option<MerchantId>,
    /// The warehouse a clerk picks in.
    #[serde(default)]
    pub warehouse_id: Option<WarehouseId>,
    /// The courier record a courier user drives as.
    #[serde(default)]
    pub courier_id: Option<CourierId>,
    /// The customer business a customer user orders for.
    #[serde(default)]
    pub customer_id: Option<CustomerId>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub role: Role,
    pub merchant_id: Option<MerchantId>,
    pub warehouse_id: Option<WarehouseId>,
    pub courier_id: Option<CourierId>,
    pub customer_id: Option<CustomerId>,
    pub locked: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewPassword {
    pub password: String,
}

/// What a successful login or refresh returns.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tokens {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds the access token stays valid.
    pub expires_in: i64,
    pub refresh_token: String,
    pub user: User,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    sid: String,
    role: String,
    iat: i64,
    exp: i64,
}

/// The caller behind a valid access token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub links: crate::policy::Links,
}

impl Principal {
    pub fn actor(&self) -> Actor {
        Actor { kind: self.links.role.as_str().to_owned(), id: self.user_id.to_string() }
    }

    pub fn scope(&self) -> crate::policy::Scope {
        match self.links.role {
            Role::Admin => crate::policy::Scope::Everything,
            _ => crate::policy::Scope::User(self.links.clone()),
        }
    }
}

fn argon2() -> Argon2<'static> {
    // OWASP: argon2id, m = 19 MiB, t = 2, p = 1.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

pub fn hash_password(password: &str) -> ApiResult<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| ApiError::Internal(anyhow::anyhow!("salt: {e}")))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("hashing: {e}")))
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| argon2().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// A hash of a password nobody has, checked when the account does not exist
/// so that a failure takes as long either way.
static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| hash_password("no such account, no such password").unwrap_or_default());

fn check_password_rules(password: &str) -> ApiResult<()> {
    let length = password.chars().count();
    if !(12..=256).contains(&length) {
        return Err(ApiError::unprocessable("weak_password", "a password needs 12 to 256 characters"));
    }
    Ok(())
}

/// Bearer tokens beginning so are tracking links, not access tokens.
pub const TRACKING_PREFIX: &str = "t.";

/// A tracking link as created: the token is shown once.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrackingLink {
    pub token: String,
    /// Where the tracking page opens: `/t/{token}`.
    pub path: String,
    pub order_id: OrderId,
    pub expires_at: DateTime<Utc>,
}

impl Identity {
    /// Whoever holds a tracking link: a visitor of its one order. Unknown
    /// links are not found; expired ones are gone (`link_expired`).
    pub async fn verify_tracking(&self, token: &str) -> ApiResult<(Actor, crate::policy::Scope)> {
        let hash = token_hash(token);
        let row: Option<(Uuid, DateTime<Utc>)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT order_id, expires_at FROM tracking_links WHERE token_sha256 = $1")
                .bind(&hash)
                .fetch_optional(pool)
                .await?
        });
        let (order, expires_at) = row.ok_or_else(|| ApiError::NotFound("no such tracking link".into()))?;
        if expires_at <= wall_now() {
            return Err(ApiError::Gone {
                code: "link_expired",
                message: "this tracking link has expired; ask the merchant for a new one".into(),
            });
        }
        let links = crate::policy::Links {
            role: Role::Visitor,
            merchant: None,
            warehouse: None,
            couriers: Vec::new(),
            customer: None,
            order: Some(OrderId(order)),
        };
        // Named by the token's hash, never the token.
        let actor = Actor { kind: Role::Visitor.as_str().to_owned(), id: hash[..16].to_owned() };
        Ok((actor, crate::policy::Scope::User(links)))
    }
}

/// 32 random bytes, URL-safe base64: refresh tokens, device keys, generated passwords.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn invalid_login() -> ApiError {
    ApiError::Unauthorized("wrong username or password".into())
}

/// Counts login attempts per address in one-minute windows.
#[derive(Default)]
pub struct AttemptLimiter {
    windows: Mutex<HashMap<IpAddr, (DateTime<Utc>, u32)>>,
}

impl AttemptLimiter {
    /// True if the address may try once more now.
    pub fn allow(&self, address: IpAddr, now: DateTime<Utc>) -> bool {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() > 100_000 {
            windows.retain(|_, (start, _)| now - *start < Duration::minutes(1));
        }
        let entry = windows.entry(address).or_insert((now, 0));
        if now - entry.0 >= Duration::minutes(1) {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= ATTEMPTS_PER_ADDRESS
    }
}

/// Signs and checks tokens, and keeps users and sessions.
pub struct Identity {
    db: Db,
    encoding: jsonwebtoken::EncodingKey,
    decoding: jsonwebtoken::DecodingKey,
    access_ttl: Duration,
    refresh_ttl: Duration,
    pub limiter: AttemptLimiter,
}

type UserRow = (Uuid, String, String, Option<Uuid>, Option<Uuid>, Option<Uuid>, Option<Uuid>, Option<DateTime<Utc>>);

/// user id, role, merchant, warehouse, courier, customer
type SessionUserRow = (Uuid, String, Option<Uuid>, Option<Uuid>, Option<Uuid>, Option<Uuid>, bool);

/// id, family, user, expires, replaced, revoked
type SessionRow = (Uuid, Uuid, Uuid, DateTime<Utc>, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

const USER_COLUMNS: &str = "id, username, role, merchant_id, warehouse_id, courier_id, customer_id, locked_until";

fn user_from_row(row: UserRow, now: DateTime<Utc>) -> ApiResult<User> {
    let (id, username, role, merchant, warehouse, courier, customer, locked_until) = row;
    Ok(User {
        id,
        username,
        role: Role::parse(&role).ok_or_else(|| ApiError::Internal(anyhow::anyhow!("user {id} has role {role}")))?,
        merchant_id: merchant.map(MerchantId),
        warehouse_id: warehouse.map(WarehouseId),
        courier_id: courier.map(CourierId),
        customer_id: customer.map(CustomerId),
        locked: locked_until.is_some_and(|t| t > now),
    })
}

impl Identity {
    pub fn new(db: Db, secret: &[u8], access_ttl_secs: i64, refresh_ttl_days: i64) -> Identity {
        Identity {
            db,
            encoding: jsonwebtoken::EncodingKey::from_secret(secret),
            decoding: jsonwebtoken::DecodingKey::from_secret(secret),
            access_ttl: Duration::seconds(access_ttl_secs.max(1)),
            refresh_ttl: Duration::days(refresh_ttl_days.max(1)),
            limiter: AttemptLimiter::default(),
        }
    }

    // ----- users -----

    pub async fn create_user(&self, new: NewUser) -> ApiResult<User> {
        let username = new.username.trim().to_owned();
        if !(3..=64).contains(&username.len())
            || !username.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
        {
            return Err(ApiError::unprocessable(
                "invalid_username",
                "a username has 3–64 letters, digits, '.', '_', '-' or '@'",
            ));
        }
        check_password_rules(&new.password)?;
        check_links(
            new.role,
            new.merchant_id.is_some(),
            new.warehouse_id.is_some(),
            new.courier_id.is_some(),
            new.customer_id.is_some(),
        )?;
        let hash = hash_password(&new.password)?;
        let id = Uuid::now_v7();
        let result = on_db_write!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO users (id, username, password_hash, role, merchant_id, warehouse_id, courier_id, \
                 customer_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(id)
            .bind(&username)
            .bind(&hash)
            .bind(new.role.as_str())
            .bind(new.merchant_id.map(MerchantId::uuid))
            .bind(new.warehouse_id.map(WarehouseId::uuid))
            .bind(new.courier_id.map(CourierId::uuid))
            .bind(new.customer_id.map(CustomerId::uuid))
            .bind(wall_now())
            .execute(pool)
            .await
            .map(|_| ())
        });
        match result {
            Ok(_) => self.user(id).await,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(ApiError::conflict("username_taken", "that username is taken"))
            }
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => Err(ApiError::unprocessable(
                "unknown_link",
                "the merchant, warehouse, courier or customer does not exist",
            )),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn user(&self, id: Uuid) -> ApiResult<User> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let row: Option<UserRow> = on_db!(&self.db, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?
        });
        user_from_row(row.ok_or_else(|| ApiError::NotFound(format!("no user {id}")))?, wall_now())
    }

    pub async fn find(&self, username: &str) -> ApiResult<User> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1");
        let row: Option<UserRow> = on_db!(&self.db, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(username).fetch_optional(pool).await?
        });
        user_from_row(row.ok_or_else(|| ApiError::NotFound(format!("no user {username}")))?, wall_now())
    }

    pub async fn users(&self) -> ApiResult<Vec<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY username");
        let rows: Vec<UserRow> = on_db!(&self.db, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?
        });
        let now = wall_now();
        rows.into_iter().map(|r| user_from_row(r, now)).collect()
    }

    /// Sets a new password and ends every session of the user.
    pub async fn set_password(&self, id: Uuid, password: &str) -> ApiResult<()> {
        check_password_rules(password)?;
        let hash = hash_password(password)?;
        let changed = on_db_write!(&self.db, pool => {
            sqlx::query("UPDATE users SET password_hash = $2, failed_logins = 0, locked_until = NULL WHERE id = $1")
                .bind(id)
                .bind(hash)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if changed == 0 {
            return Err(ApiError::NotFound(format!("no user {id}")));
        }
        self.revoke_user(id).await
    }

    /// Clears a lockout.
    pub async fn unlock(&self, id: Uuid) -> ApiResult<()> {
        let changed = on_db_write!(&self.db, pool => {
            sqlx::query("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if changed == 0 {
            return Err(ApiError::NotFound(format!("no user {id}")));
        }
        Ok(())
    }

    /// Ends every session of the user at once.
    pub async fn revoke_user(&self, id: Uuid) -> ApiResult<()> {
        on_db_write!(&self.db, pool => {
            sqlx::query("UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(wall_now())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    // ----- login, refresh, logout -----

    pub async fn login(&self, credentials: &Credentials, address: IpAddr) -> ApiResult<Tokens> {
        let now = wall_now();
        if !self.limiter.allow(address, now) {
            return Err(ApiError::TooManyAttempts);
        }
        let row: Option<(Uuid, String, i64, Option<DateTime<Utc>>)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT id, password_hash, failed_logins, locked_until FROM users WHERE username = $1")
                .bind(credentials.username.trim())
                .fetch_optional(pool)
                .await?
        });
        let Some((id, hash, failed, locked_until)) = row else {
            verify_password(&credentials.password, &DUMMY_HASH);
            return Err(invalid_login());
        };
        let locked = locked_until.is_some_and(|t| t > now);
        // A locked account is checked like any other, and answers the same.
        if !verify_password(&credentials.password, &hash) || locked {
            if !locked {
                let failed = failed + 1;
                let lock = (failed >= LOCK_AFTER).then(|| now + Duration::minutes(LOCK_MINUTES));
                on_db_write!(&self.db, pool => {
                    sqlx::query("UPDATE users SET failed_logins = $2, locked_until = $3 WHERE id = $1")
                        .bind(id)
                        .bind(failed)
                        .bind(lock)
                        .execute(pool)
                        .await?;
                });
                if lock.is_some() {
                    tracing::warn!(user = %id, "account locked after repeated failed logins");
                }
            }
            return Err(invalid_login());
        }
        if failed > 0 {
            on_db_write!(&self.db, pool => {
                sqlx::query("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = $1")
                    .bind(id)
                    .execute(pool)
                    .await?;
            });
        }
        self.open_session(id, Uuid::now_v7()).await
    }

    async fn open_session(&self, user_id: Uuid, family: Uuid) -> ApiResult<Tokens> {
        let user = self.user(user_id).await?;
        let now = wall_now();
        let session = Uuid::now_v7();
        let refresh = random_token();
        on_db_write!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO sessions (id, family_id, user_id, refresh_hash, expires_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(session)
            .bind(family)
            .bind(user_id)
            .bind(token_hash(&refresh))
            .bind(now + self.refresh_ttl)
            .bind(now)
            .execute(pool)
            .await?;
        });
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: user_id.to_string(),
            sid: session.to_string(),
            role: user.role.as_str().into(),
            iat: now.timestamp(),
            exp: (now + self.access_ttl).timestamp(),
        };
        let access =
            jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &claims, &self.encoding)
                .map_err(|e| ApiError::Internal(e.into()))?;
        Ok(Tokens {
            access_token: access,
            token_type: "Bearer".into(),
            expires_in: self.access_ttl.num_seconds(),
            refresh_token: refresh,
            user,
        })
    }

    /// Exchanges a refresh token for new tokens. A token that was already
    /// exchanged is a sign of theft: its whole family is revoked.
    pub async fn refresh(&self, token: &str) -> ApiResult<Tokens> {
        let now = wall_now();
        let row: Option<SessionRow> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT id, family_id, user_id, expires_at, replaced_at, revoked_at FROM sessions WHERE refresh_hash = $1",
            )
            .bind(token_hash(token))
            .fetch_optional(pool)
            .await?
        });
        let refused = || ApiError::Unauthorized("the refresh token is not valid; log in again".into());
        let Some((session, family, user, expires_at, replaced_at, revoked_at)) = row else {
            return Err(refused());
        };
        let within_grace =
            replaced_at.is_some_and(|at| now - at <= chrono::Duration::seconds(REFRESH_REUSE_GRACE_SECS));
        let successor_used = within_grace && {
            let (used,): (i64,) = on_db!(&self.db, pool => {
                sqlx::query_as(
                    "SELECT COUNT(*) FROM sessions WHERE family_id = $1 AND revoked_at IS NULL AND replaced_at IS NULL \
                     AND used_at IS NOT NULL",
                )
                .bind(family)
                .fetch_one(pool)
                .await?
            });
            used > 0
        };
        if within_grace && !successor_used && revoked_at.is_none() && expires_at > now {
            // Revoke the successor the client never received, then issue anew.
            on_db_write!(&self.db, pool => {
                sqlx::query(
                    "UPDATE sessions SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL AND replaced_at IS NULL",
                )
                .bind(family)
                .bind(now)
                .execute(pool)
                .await?;
            });
            return self.open_session(user, family).await;
        }
        if replaced_at.is_some() {
            tracing::warn!(user = %user, "a replaced refresh token was presented again; revoking its family");
            on_db_write!(&self.db, pool => {
                sqlx::query("UPDATE sessions SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL")
                    .bind(family)
                    .bind(now)
                    .execute(pool)
                    .await?;
            });
            return Err(refused());
        }
        if revoked_at.is_some() || expires_at <= now {
            return Err(refused());
        }
        // Only one exchange of a token can win.
        let won = on_db_write!(&self.db, pool => {
            sqlx::query("UPDATE sessions SET replaced_at = $2 WHERE id = $1 AND replaced_at IS NULL AND revoked_at IS NULL")
                .bind(session)
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if won != 1 {
            return Err(refused());
        }
        self.open_session(user, family).await
    }

    pub async fn logout(&self, principal: &Principal) -> ApiResult<()> {
        on_db_write!(&self.db, pool => {
            sqlx::query("UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(principal.session_id)
                .bind(wall_now())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Checks an access token: signature (HS256 only), issuer, audience,
    /// expiry, and that its session is still open.
    pub async fn verify(&self, token: &str) -> ApiResult<Principal> {
        let refused = || ApiError::Unauthorized("the access token is not valid; log in or refresh".into());
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(|_| refused())?;
        let claims = data.claims;
        let (user_id, session_id) = match (claims.sub.parse::<Uuid>(), claims.sid.parse::<Uuid>()) {
            (Ok(u), Ok(s)) => (u, s),
            _ => return Err(refused()),
        };
        // The session must still be open; the user's role and links are read fresh.
        let row: Option<SessionUserRow> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT u.id, u.role, u.merchant_id, u.warehouse_id, u.courier_id, u.customer_id, s.used_at IS NOT NULL \
                 FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1 AND s.revoked_at IS NULL",
            )
            .bind(session_id)
            .fetch_optional(pool)
            .await?
        });
        let Some((owner, role, merchant, warehouse, courier, customer, used)) = row else { return Err(refused()) };
        if owner != user_id {
            return Err(refused());
        }
        if !used {
            // The first use of this pair: from now on, presenting the refresh
            // token it replaced is theft, not a lost answer.
            on_db_write!(&self.db, pool => {
                sqlx::query("UPDATE sessions SET used_at = $2 WHERE id = $1 AND used_at IS NULL")
                    .bind(session_id)
                    .bind(wall_now())
                    .execute(pool)
                    .await?;
            });
        }
        let role = Role::parse(&role).ok_or_else(refused)?;
        let mut couriers: Vec<CourierId> = courier.map(CourierId).into_iter().collect();
        if role == Role::Courier {
            let more: Vec<(Uuid,)> = on_db!(&self.db, pool => {
                sqlx::query_as("SELECT courier_id FROM user_couriers WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_all(pool)
                    .await?
            });
            for (c,) in more {
                if !couriers.contains(&CourierId(c)) {
                    couriers.push(CourierId(c));
                }
            }
        }
        let links = crate::policy::Links {
            role,
            merchant: merchant.map(MerchantId),
            warehouse: warehouse.map(WarehouseId),
            couriers,
            customer: customer.map(CustomerId),
            order: None,
        };
        Ok(Principal { user_id, session_id, links })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hashed_with_argon2id_at_owasp_parameters() {
        let hash = hash_password("correct horse battery staple").expect("hashes");
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(verify_password("correct horse battery staple", &hash));
        assert!(!verify_password("correct horse battery stapler", &hash));
        assert_ne!(hash, hash_password("correct horse battery staple").expect("hashes"), "salted");
    }

    #[test]
    fn an_address_gets_a_limited_number_of_attempts_a_minute() {
        let limiter = AttemptLimiter::default();
        let address: IpAddr = [127, 0, 0, 1].into();
        let now = wall_now();
        for _ in 0..ATTEMPTS_PER_ADDRESS {
            assert!(limiter.allow(address, now));
        }
        assert!(!limiter.allow(address, now));
        assert!(limiter.allow([127, 0, 0, 2].into(), now), "other addresses are not affected");
        assert!(limiter.allow(address, now + Duration::seconds(61)), "the window moves on");
    }
}

/// What kind of device a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Scale,
    TemperatureSensor,
}

/// A device to register: scoped to one warehouse or one vehicle (its courier).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewDevice {
    pub kind: DeviceKind,
    #[serde(default)]
    pub warehouse_id: Option<WarehouseId>,
    #[serde(default)]
    pub courier_id: Option<CourierId>,
}

/// A registered device and its API key, shown once.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceCredential {
    pub id: Uuid,
    pub kind: DeviceKind,
    pub warehouse_id: Option<WarehouseId>,
    pub courier_id: Option<CourierId>,
    /// Send as `Authorization: Device <apiKey>`. It is not stored and cannot be shown again.
    pub api_key: String,
}

/// A device that presented a valid key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePrincipal {
    pub id: Uuid,
    pub merchant: MerchantId,
    pub warehouse: Option<WarehouseId>,
    pub courier: Option<CourierId>,
}

impl Identity {
    /// Registers a device and returns its key (stored only as a hash).
    pub async fn create_device(&self, merchant: MerchantId, new: NewDevice) -> ApiResult<DeviceCredential> {
        if new.warehouse_id.is_some() == new.courier_id.is_some() {
            return Err(ApiError::unprocessable(
                "device_scope",
                "a device belongs to exactly one warehouse or one vehicle",
            ));
        }
        let id = Uuid::now_v7();
        let api_key = format!("xld_{}", random_token());
        let kind = serde_json::to_value(new.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let result = on_db_write!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO devices (id, merchant_id, kind, warehouse_id, courier_id, key_hash, created_at) \
                 SELECT $1, $2, $3, $4, $5, $6, $7 WHERE \
                 ($4 IS NULL OR EXISTS (SELECT 1 FROM warehouses WHERE id = $4 AND merchant_id = $2)) AND \
                 ($5 IS NULL OR EXISTS (SELECT 1 FROM couriers WHERE id = $5 AND merchant_id = $2))",
            )
            .bind(id)
            .bind(merchant.uuid())
            .bind(kind)
            .bind(new.warehouse_id.map(WarehouseId::uuid))
            .bind(new.courier_id.map(CourierId::uuid))
            .bind(token_hash(&api_key))
            .bind(wall_now())
            .execute(pool)
            .await?
            .rows_affected()
        });
        if result != 1 {
            return Err(ApiError::unprocessable("unknown_link", "the warehouse or courier is not this merchant's"));
        }
        Ok(DeviceCredential { id, kind: new.kind, warehouse_id: new.warehouse_id, courier_id: new.courier_id, api_key })
    }

    /// Checks a device key.
    pub async fn verify_device(&self, key: &str) -> ApiResult<DevicePrincipal> {
        let row: Option<(Uuid, Uuid, Option<Uuid>, Option<Uuid>)> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT id, merchant_id, warehouse_id, courier_id FROM devices WHERE key_hash = $1 AND revoked_at IS NULL",
            )
            .bind(token_hash(key))
            .fetch_optional(pool)
            .await?
        });
        let (id, merchant, warehouse, courier) =
            row.ok_or_else(|| ApiError::Unauthorized("the device key is not valid".into()))?;
        Ok(DevicePrincipal {
            id,
            merchant: MerchantId(merchant),
            warehouse: warehouse.map(WarehouseId),
            courier: courier.map(CourierId),
        })
    }
}

impl Identity {
    /// Lets a courier user also drive as another merchant's courier record.
    pub async fn link_courier(&self, user: Uuid, courier: CourierId) -> ApiResult<()> {
        let found = self.user(user).await?;
        if found.role != Role::Courier {
            return Err(ApiError::unprocessable("not_a_courier", "only courier users drive for merchants"));
        }
        let result = on_db_write!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO user_couriers (user_id, courier_id) SELECT $1, $2 WHERE EXISTS \
                 (SELECT 1 FROM couriers WHERE id = $2) ON CONFLICT (user_id, courier_id) DO NOTHING",
            )
            .bind(user)
            .bind(courier.uuid())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        });
        result.map(|_| ()).map_err(ApiError::from)
    }
}

/// Links a courier user to another courier record.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CourierLink {
    pub courier_id: CourierId,
}

/// A new role for an existing user, with the links the role needs.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleAssignment {
    pub role: Role,
    #[serde(default)]
    pub merchant_id: Option<MerchantId>,
    #[serde(default)]
    pub warehouse_id: Option<WarehouseId>,
    #[serde(default)]
    pub courier_id: Option<CourierId>,
    #[serde(default)]
    pub customer_id: Option<CustomerId>,
}

fn check_links(role: Role, merchant: bool, warehouse: bool, courier: bool, customer: bool) -> ApiResult<()> {
    if role.needs_merchant() && !merchant {
        return Err(ApiError::unprocessable("merchant_required", "this role works for a merchant: give merchantId"));
    }
    if role == Role::WarehouseClerk && !warehouse {
        return Err(ApiError::unprocessable("warehouse_required", "a warehouse clerk needs warehouseId"));
    }
    if role == Role::Courier && !courier {
        return Err(ApiError::unprocessable("courier_required", "a courier user needs courierId"));
    }
    if role == Role::Customer && !customer {
        return Err(ApiError::unprocessable("customer_required", "a customer user needs customerId"));
    }
    Ok(())
}

impl Identity {
    /// Gives a user another role; it takes effect on the user's next request.
    pub async fn assign_role(&self, id: Uuid, assignment: RoleAssignment) -> ApiResult<User> {
        let a = &assignment;
        check_links(
            a.role,
            a.merchant_id.is_some(),
            a.warehouse_id.is_some(),
            a.courier_id.is_some(),
            a.customer_id.is_some(),
        )?;
        let changed = on_db_write!(&self.db, pool => {
            sqlx::query(
                "UPDATE users SET role = $2, merchant_id = $3, warehouse_id = $4, courier_id = $5, customer_id = $6 WHERE id = $1",
            )
            .bind(id)
            .bind(a.role.as_str())
            .bind(a.merchant_id.map(MerchantId::uuid))
            .bind(a.warehouse_id.map(WarehouseId::uuid))
            .bind(a.courier_id.map(CourierId::uuid))
            .bind(a.customer_id.map(CustomerId::uuid))
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        });
        match changed {
            Ok(0) => Err(ApiError::NotFound(format!("no user {id}"))),
            Ok(_) => self.user(id).await,
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => Err(ApiError::unprocessable(
                "unknown_link",
                "the merchant, warehouse, courier or customer does not exist",
            )),
            Err(e) => Err(e.into()),
        }
    }
}
