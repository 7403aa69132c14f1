//! The server through its public surface, on SQLite and on PostgreSQL: every
//! test body runs once per backend.

use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::{Value, json};
use xianlu_tests::{
    Backend, Client, Reply, ServerProcess, Shop, Stream, TestServer, signed_notification, upload_signature,
};

xianlu_tests::on_both_backends!(
    an_order_runs_from_creation_to_sign_off_and_is_repriced_on_actual_weight,
    a_short_line_goes_out_of_stock_and_is_resolved_by_substitution,
    a_credit_customer_order_is_paid_and_stock_checked_at_creation,
    cancelling_after_packing_puts_the_goods_back_in_stock,
    a_refused_delivery_returns_and_a_damaged_one_becomes_a_claim,
    of_concurrent_conflicting_commands_exactly_one_wins,
    an_idempotent_request_is_executed_once_and_replayed_byte_for_byte,
    a_reconnecting_subscriber_receives_what_it_missed_exactly_once_then_live_events,
    bad_input_gets_a_problem_document_and_changes_nothing,
    a_signed_payment_notification_secures_payment_once,
    the_audit_chain_detects_edited_inserted_and_deleted_rows,
    orders_are_listed_with_filters_and_cursor_pages,
    stream_sequences_are_gap_free_in_commit_order,
    operations_endpoints_answer,
    an_unanswered_substitution_offer_ships_short_when_its_window_closes,
    a_caller_reads_its_own_change_at_once_even_from_the_hot_cache,
    logging_in_gives_tokens_that_work_and_logout_ends_them_at_once,
    failed_logins_say_nothing_and_lock_the_account_until_an_admin_clears_it,
    tokens_expire_and_only_our_signature_issuer_and_audience_are_accepted,
    the_command_line_creates_users_who_can_log_in,
    the_command_line_imports_an_openstreetmap_extract_and_refuses_what_is_not_one,
    the_map_serves_road_geometry_and_routes_from_the_imported_network,
    an_orders_trail_is_its_couriers_trusted_positions_from_dispatch_to_sign_off,
    each_role_reaches_only_its_own_objects_and_actions,
    every_route_refuses_every_role_what_it_may_not_reach,
    https_speaks_tls_1_3_with_hsts_and_can_refuse_tls_1_2,
    personal_data_is_encrypted_at_rest_and_erasure_shreds_it_but_keeps_the_orders,
    the_logs_of_a_whole_order_lifecycle_hold_no_phone_address_or_token,
    a_device_key_is_stored_hashed_and_opens_nothing_but_readings,
    after_a_demo_run_the_database_holds_no_plaintext_phone_number,
);

const PASSWORD: &str = "菠菜-spinach-2030!";

async fn create_user(admin: &Client, username: &str, role: &str, merchant: &str) -> Result<Value> {
    admin
        .ok(
            "/api/v1/admin/users",
            &json!({"username": username, "password": PASSWORD, "role": role, "merchantId": merchant}),
        )
        .await
}

async fn logging_in_gives_tokens_that_work_and_logout_ends_them_at_once(backend: Backend) -> Result<()> {
    let (server, admin, shop) = setup(backend).await?;
    let user = create_user(&admin, "owner.wang", "merchant_owner", &shop.merchant).await?;
    ensure!(user["role"] == "merchant_owner" && user.get("password").is_none());
    let (owner, tokens) = Client::login(&server.url, "owner.wang", PASSWORD).await?;
    ensure!(tokens["tokenType"] == "Bearer" && tokens["expiresIn"] == 900);
    ensure!(owner.get(&format!("/api/v1/orders?merchantId={}", shop.merchant)).await?.status == 200);
    let id = shop.place(&owner, &shop.spinach()).await?;
    let events = owner.get(&format!("/api/v1/orders/{id}/events")).await?.json();
    ensure!(events[0]["actor"] == json!({"kind": "merchant_owner", "id": user["id"]}), "the audit names the user");

    // A lost answer: the same refresh token again, before its new pair was
    // ever used, gets a fresh pair and the unreceived one is revoked.
    let anon = Client::new(&server.url, "-");
    let (_, lost) = Client::login(&server.url, "owner.wang", PASSWORD).await?;
    let lost_token = lost["refreshToken"].as_str().unwrap_or_default().to_owned();
    let never_received = anon.ok("/api/v1/auth/refresh", &json!({"refreshToken": lost_token})).await?;
    let retried = anon.ok("/api/v1/auth/refresh", &json!({"refreshToken": lost_token})).await?;
    ensure!(retried["refreshToken"] != never_received["refreshToken"]);
    let unreceived = Client::with_token(&server.url, never_received["accessToken"].as_str().unwrap_or_default());
    ensure!(unreceived.get("/api/v1/orders").await?.status == 401, "the pair never received is revoked");
    let retried_client = Client::with_token(&server.url, retried["accessToken"].as_str().unwrap_or_default());
    ensure!(retried_client.get("/api/v1/orders").await?.status == 200);

    // Refresh rotates; presenting the old refresh token again once the new
    // pair is in use revokes the family.
    let first = tokens["refreshToken"].as_str().unwrap_or_default().to_owned();
    let rotated = anon.ok("/api/v1/auth/refresh", &json!({"refreshToken": first})).await?;
    let second = rotated["refreshToken"].as_str().unwrap_or_default().to_owned();
    ensure!(second != first);
    let rotated_client = Client::with_token(&server.url, rotated["accessToken"].as_str().unwrap_or_default());
    ensure!(rotated_client.get("/api/v1/orders").await?.status == 200);
    let reuse = anon.post("/api/v1/auth/refresh", &json!({"refreshToken": first})).await?;
    ensure!(reuse.status == 401);
    let after_theft = anon.post("/api/v1/auth/refresh", &json!({"refreshToken": second})).await?;
    ensure!(after_theft.status == 401, "the whole family is revoked");
    ensure!(rotated_client.get("/api/v1/orders").await?.status == 401, "and its access tokens with it");

    // Logout ends the session at once.
    let (again, _) = Client::login(&server.url, "owner.wang", PASSWORD).await?;
    ensure!(again.post("/api/v1/auth/logout", &json!({})).await?.status == 204);
    ensure!(again.get("/api/v1/orders").await?.status == 401);
    // So does an admin's revocation.
    let (third, _) = Client::login(&server.url, "owner.wang", PASSWORD).await?;
    let user_id = user["id"].as_str().unwrap_or_default();
    let audited =
        || async { anyhow::Ok(admin.get("/api/v1/admin/audit/verify").await?.json()["entries"].as_u64().unwrap_or(0)) };
    let before = audited().await?;
    ensure!(admin.post(&format!("/api/v1/admin/users/{user_id}/revoke"), &json!({})).await?.status == 204);
    ensure!(third.get("/api/v1/orders").await?.status == 401);
    ensure!(audited().await? == before + 1, "the revocation is audited");
    // A new role applies from the next request.
    let (owner, _) = Client::login(&server.url, "owner.wang", PASSWORD).await?;
    let stock = format!("/api/v1/warehouses/{}/stock", shop.warehouse);
    ensure!(owner.get(&stock).await?.status == 200);
    let role_path = format!("/api/v1/admin/users/{user_id}/role");
    let service = json!({"role": "customer_service", "merchantId": shop.merchant});
    let demoted = admin.send(reqwest::Method::PUT, &role_path, Some(&service), None).await?;
    ensure!(demoted.status == 200 && demoted.json()["role"] == "customer_service");
    ensure!(owner.get(&stock).await?.status == 403, "no longer an owner");
    let owner_again = json!({"role": "merchant_owner", "merchantId": shop.merchant});
    ensure!(admin.send(reqwest::Method::PUT, &role_path, Some(&owner_again), None).await?.status == 200);
    // Only admins manage users.
    let (owner, _) = Client::login(&server.url, "owner.wang", PASSWORD).await?;
    let denied =
        owner.post("/api/v1/admin/users", &json!({"username": "x", "password": PASSWORD, "role": "admin"})).await?;
    ensure!(denied.status == 403 && denied.code() == "forbidden");
    let weak =
        admin.post("/api/v1/admin/users", &json!({"username": "weak", "password": "short", "role": "admin"})).await?;
    ensure!(weak.status == 422 && weak.code() == "weak_password");
    let taken = admin
        .post("/api/v1/admin/users", &json!({"username": "owner.wang", "password": PASSWORD, "role": "merchant_owner", "merchantId": shop.merchant}))
        .await?;
    ensure!(taken.status == 409 && taken.code() == "username_taken");
    server.stop().await;
    Ok(())
}

async fn failed_logins_say_nothing_and_lock_the_account_until_an_admin_clears_it(backend: Backend) -> Result<()> {
    let (server, admin, shop) = setup(backend).await?;
    let user = create_user(&admin, "staff.li", "merchant_staff", &shop.merchant).await?;
    let anon = Client::new(&server.url, "-");
    let attempt = |username: &'static str, password: &'static str| {
        let anon = anon.clone();
        async move { anon.post("/api/v1/auth/login", &json!({"username": username, "password": password})).await }
    };
    let wrong = attempt("staff.li", "not the password at all").await?;
    let unknown = attempt("nobody.here", "not the password at all").await?;
    ensure!(wrong.status == 401 && unknown.status == 401);
    ensure!(wrong.json()["detail"] == unknown.json()["detail"] && wrong.code() == unknown.code(), "no hint either way");
    for _ in 0..4 {
        attempt("staff.li", "not the password at all").await?;
    }
    let locked = anon.post("/api/v1/auth/login", &json!({"username": "staff.li", "password": PASSWORD})).await?;
    ensure!(locked.status == 401 && locked.json()["detail"] == wrong.json()["detail"], "locked, and says nothing more");
    let user_id = user["id"].as_str().unwrap_or_default();
    ensure!(admin.post(&format!("/api/v1/admin/users/{user_id}/unlock"), &json!({})).await?.status == 204);
    Client::login(&server.url, "staff.li", PASSWORD).await?;
    // One address gets a limited number of attempts a minute.
    let mut limited = false;
    for _ in 0..25 {
        if attempt("nobody.here", "guess").await?.status == 429 {
            limited = true;
        }
    }
    ensure!(limited, "the address was rate-limited");
    server.stop().await;
    Ok(())
}

fn b64_std(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn forge(secret: &[u8], header: &Value, claims: &Value) -> String {
    use hmac::Mac;
    let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
}

async fn tokens_expire_and_only_our_signature_issuer_and_audience_are_accepted(backend: Backend) -> Result<()> {
    use base64::Engine;
    let secret = "a-test-secret-that-is-long-enough-0123456789";
    let db = xianlu_tests::TestDb::create(backend).await?;
    let server = TestServer::spawn_with(db, |c| {
        c.token_secret = Some(secret.into());
        c.access_token_ttl_secs = 2;
    })
    .await?;
    let admin = server.client("admin:root");
    let shop = Shop::open(&admin).await?;
    create_user(&admin, "cs.zhao", "customer_service", &shop.merchant).await?;
    let (client, tokens) = Client::login(&server.url, "cs.zhao", PASSWORD).await?;
    let token = tokens["accessToken"].as_str().unwrap_or_default();
    let payload = token.split('.').nth(1).unwrap_or_default();
    let claims: Value = serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?)?;
    ensure!(claims["iss"] == "xianlu" && claims["aud"] == "xianlu-api" && claims["role"] == "customer_service");
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    let far = chrono::Utc::now().timestamp() + 3600;
    let mut good = claims.clone();
    good["exp"] = json!(far);
    // The forging itself is right: with our secret and claims it is accepted…
    let accepted = Client::with_token(&server.url, &forge(secret.as_bytes(), &hs256, &good));
    ensure!(accepted.get("/api/v1/orders").await?.status == 200);
    // …and refused with another key, another audience or issuer, or no algorithm.
    let mut other_audience = good.clone();
    other_audience["aud"] = json!("someone-else");
    let mut other_issuer = good.clone();
    other_issuer["iss"] = json!("evil");
    let unsigned = format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(good.to_string().as_bytes()));
    for (why, forged) in [
        ("another key", forge(b"another-secret-another-secret-0123456789", &hs256, &good)),
        ("another audience", forge(secret.as_bytes(), &hs256, &other_audience)),
        ("another issuer", forge(secret.as_bytes(), &hs256, &other_issuer)),
        ("alg none", unsigned),
        ("HS384", forge(secret.as_bytes(), &json!({"alg": "HS384", "typ": "JWT"}), &good)),
    ] {
        let reply = Client::with_token(&server.url, &forged).get("/api/v1/orders").await?;
        ensure!(reply.status == 401, "{why} was accepted");
    }
    ensure!(client.get("/api/v1/orders").await?.status == 200);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    ensure!(client.get("/api/v1/orders").await?.status == 401, "expired");
    server.stop().await;
    Ok(())
}

/// Creates a user with the given links and logs in as them.
async fn user(server: &TestServer, admin: &Client, username: &str, role: &str, links: Value) -> Result<Client> {
    let mut body = json!({"username": username, "password": PASSWORD, "role": role});
    if let (Some(body), Some(links)) = (body.as_object_mut(), links.as_object()) {
        body.extend(links.clone());
    }
    admin.ok("/api/v1/admin/users", &body).await?;
    Ok(Client::login(&server.url, username, PASSWORD).await?.0)
}

async fn each_role_reaches_only_its_own_objects_and_actions(backend: Backend) -> Result<()> {
    let (server, admin, a) = setup(backend).await?;
    let b = Shop::open(&admin).await?;
    let owner = user(&server, &admin, "owner.a", "merchant_owner", json!({"merchantId": a.merchant})).await?;
    let owner_b = user(&server, &admin, "owner.b", "merchant_owner", json!({"merchantId": b.merchant})).await?;
    let staff = user(&server, &admin, "staff.a", "merchant_staff", json!({"merchantId": a.merchant})).await?;
    let clerk = user(
        &server,
        &admin,
        "clerk.a",
        "warehouse_clerk",
        json!({"merchantId": a.merchant, "warehouseId": a.warehouse}),
    )
    .await?;
    let courier = user(&server, &admin, "courier.a", "courier", json!({"courierId": a.couriers[0]})).await?;
    let customer = user(&server, &admin, "customer.a", "customer", json!({"customerId": a.prepaid_customer})).await?;
    let service = user(&server, &admin, "service.a", "customer_service", json!({"merchantId": a.merchant})).await?;

    // a1 is on the road with courier 0; a2 waits to be picked; b1 belongs to merchant B.
    let a1 = a.place(&owner, &a.spinach()).await?;
    deliver(&owner, &a, &a1).await?;
    let a2 = a.place(&owner, &a.spinach()).await?;
    owner.command(&a2, json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}})).await?;
    let b1 = b.place(&owner_b, &b.spinach()).await?;
    let status_of = |reply: Reply| reply.status;
    let read = |client: &Client, id: &str| {
        let (client, path) = (client.clone(), format!("/api/v1/orders/{id}"));
        async move { client.get(&path).await.map(status_of) }
    };
    let act = |client: &Client, id: &str, command: Value| {
        let (client, id) = (client.clone(), id.to_owned());
        async move { client.command_reply(&id, command, None).await.map(status_of) }
    };
    let cancel = json!({"type": "CANCEL", "reason": "test"});
    let assign = json!({"type": "ASSIGN_COURIER", "courierId": a.couriers[1]});

    // A foreign object is not found, for reads and actions alike.
    for (who, client) in [
        ("owner A", &owner),
        ("staff A", &staff),
        ("service A", &service),
        ("customer A", &customer),
        ("courier A", &courier),
        ("clerk A", &clerk),
    ] {
        ensure!(read(client, &b1).await? == 404, "{who} reads B's order");
        ensure!(act(client, &b1, cancel.clone()).await? == 404, "{who} cancels B's order");
    }
    ensure!(read(&owner_b, &a1).await? == 404 && act(&owner_b, &a2, cancel.clone()).await? == 404);
    // Object rules within the merchant.
    ensure!(read(&courier, &a1).await? == 200 && read(&courier, &a2).await? == 404, "a courier sees only their orders");
    ensure!(
        read(&clerk, &a2).await? == 200 && read(&clerk, &a1).await? == 404,
        "a clerk sees only picking-stage orders"
    );
    ensure!(read(&customer, &a1).await? == 200);
    let seen_by_customer = customer.order(&a1).await?;
    ensure!(seen_by_customer["driverInfo"]["phone"] == "138****0001", "{}", seen_by_customer["driverInfo"]);
    ensure!(owner.order(&a1).await?["driverInfo"]["phone"] == "13812340001", "the merchant sees it in full");
    ensure!(read(&service, &a1).await? == 200 && read(&staff, &a2).await? == 200);
    // Actions a role may never take on objects it can see are forbidden.
    ensure!(act(&clerk, &a2, cancel.clone()).await? == 403, "a clerk changes only picking");
    ensure!(act(&courier, &a1, cancel.clone()).await? == 403);
    ensure!(act(&service, &a2, assign.clone()).await? == 403, "customer service changes only exceptions and claims");
    ensure!(act(&customer, &a2, assign.clone()).await? == 403);
    // …and allowed ones work.
    ensure!(act(&clerk, &a2, json!({"type": "START_PICKING"})).await? == 200);
    ensure!(act(&courier, &a1, json!({"type": "REPORT_EXCEPTION", "kind": "DELAY", "note": "堵车"})).await? == 200);
    ensure!(act(&service, &a1, json!({"type": "RESUME_DELIVERY"})).await? == 200);
    ensure!(act(&staff, &a2, json!({"type": "RECORD_PICK", "lineNo": 1, "base": 2000})).await? == 200);
    // Lists hold only what the caller may see.
    let listed = |client: &Client| {
        let client = client.clone();
        async move {
            let page = client.get("/api/v1/orders").await?.json();
            anyhow::Ok(
                page["items"]
                    .as_array()
                    .map(|i| i.iter().map(|o| o["id"].as_str().unwrap_or_default().to_owned()).collect::<Vec<_>>())
                    .unwrap_or_default(),
            )
        }
    };
    ensure!(listed(&owner).await?.len() == 2 && listed(&owner_b).await? == [b1.clone()]);
    ensure!(listed(&courier).await? == [a1.clone()] && listed(&clerk).await? == [a2.clone()]);
    ensure!(listed(&customer).await?.len() == 2, "both of the customer's orders");
    // Contact phones: the courier gets the full number only while delivering the order.
    let contact_phone = |view: Value| view["contact"]["phone"].as_str().map(str::to_owned);
    ensure!(contact_phone(courier.order(&a1).await?) == Some("13800000001".into()), "delivering: full");
    owner.command(&a2, json!({"type": "ASSIGN_COURIER", "courierId": a.couriers[0]})).await?;
    ensure!(contact_phone(courier.order(&a2).await?) == Some("138****0001".into()), "not yet on the road: masked");
    ensure!(clerk.order(&a2).await?["contact"].is_null(), "a clerk sees no contact");
    ensure!(contact_phone(customer.order(&a1).await?) == Some("13800000001".into()));
    ensure!(contact_phone(service.order(&a1).await?) == Some("13800000001".into()));
    // A courier who also drives for merchant B sees B's orders assigned to that record.
    let courier_user = admin.get("/api/v1/admin/users").await?.json().as_array().and_then(|u| {
        u.iter().find(|u| u["username"] == "courier.a").and_then(|u| u["id"].as_str().map(str::to_owned))
    });
    let courier_user = courier_user.unwrap_or_default();
    owner_b.command(&b1, json!({"type": "ASSIGN_COURIER", "courierId": b.couriers[0]})).await?;
    ensure!(read(&courier, &b1).await? == 404, "not yet driving for B");
    let link = admin
        .post(&format!("/api/v1/admin/users/{courier_user}/couriers"), &json!({"courierId": b.couriers[0]}))
        .await?;
    ensure!(link.status == 204);
    ensure!(read(&courier, &b1).await? == 200, "now driving for A and B");
    ensure!(listed(&courier).await?.contains(&b1) && listed(&courier).await?.contains(&a1));
    // Creating orders: a customer only for itself.
    let mut for_other = a.spinach();
    for_other["customerId"] = json!(a.credit_customer);
    for_other["paymentTerms"] = json!({"kind": "CREDIT", "days": 30});
    ensure!(customer.post("/api/v1/orders", &for_other).await?.status == 404);
    ensure!(customer.post("/api/v1/orders", &a.spinach()).await?.status == 201);
    ensure!(
        courier.post("/api/v1/orders", &a.spinach()).await?.status == 404,
        "a merchant is out of a courier's reach"
    );
    // Parties and stock.
    let warehouse = json!({"name": "B 仓", "address": "x", "location": {"lat": 39.9, "lng": 116.4}});
    let foreign = owner_b.post(&format!("/api/v1/merchants/{}/warehouses", a.merchant), &warehouse).await?;
    ensure!(foreign.status == 404, "{foreign:?}");
    ensure!(
        staff
            .post(
                &format!("/api/v1/merchants/{}/couriers", a.merchant),
                &json!({"name": "王", "phone": "1", "vehicle": "van"})
            )
            .await?
            .status
            == 403
    );
    ensure!(owner.post(&format!("/api/v1/merchants/{}/warehouses", a.merchant), &warehouse).await?.status == 201);
    ensure!(owner_b.get(&format!("/api/v1/warehouses/{}/stock", a.warehouse)).await?.status == 404);
    ensure!(clerk.get(&format!("/api/v1/warehouses/{}/stock", a.warehouse)).await?.status == 200);
    ensure!(
        owner
            .post("/api/v1/merchants", &json!({"name": "x", "orderPrefix": "XX", "timeZone": "Asia/Shanghai"}))
            .await?
            .status
            == 403
    );
    ensure!(owner.get("/api/v1/admin/audit/verify").await?.status == 403);
    // Push subscriptions go through the same rules.
    let token = |client: &str| {
        let url = server.url.clone();
        let name = client.to_owned();
        async move {
            anyhow::Ok(
                Client::login(&url, &name, PASSWORD).await?.1["accessToken"].as_str().unwrap_or_default().to_owned(),
            )
        }
    };
    let mut stream = Stream::connect_with_token(&server.url, &token("courier.a").await?).await?;
    stream.send(json!({"type": "SUBSCRIBE", "topics": [{"merchant": a.merchant}]})).await?;
    ensure!(stream.next().await?["code"] == "unknown_topic", "a courier cannot follow the merchant");
    stream.send(json!({"type": "SUBSCRIBE", "topics": [{"courier": a.couriers[0]}]})).await?;
    ensure!(stream.next().await?["type"] == "SUBSCRIBED", "but can follow themself");
    let mut stream = Stream::connect_with_token(&server.url, &token("owner.b").await?).await?;
    stream.send(json!({"type": "SUBSCRIBE", "topics": [{"order": a1}]})).await?;
    ensure!(stream.next().await?["code"] == "unknown_topic");
    let mut stream = Stream::connect_with_token(&server.url, &token("owner.a").await?).await?;
    ensure!(stream.subscribe(json!([{"merchant": a.merchant}]), None).await?["type"] == "SUBSCRIBED");
    server.stop().await;
    Ok(())
}

/// What a role gets from a route: on its own object, and on another merchant's.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Allowed on its own object; a foreign one is not found.
    Ok,
    /// Forbidden on its own object; a foreign one is not found.
    Forbidden,
    /// Not within its reach at all: not found either way.
    Hidden,
    /// Only administrators: forbidden for everyone else (there is no foreign object).
    AdminOnly,
}

const ROLES: [&str; 7] =
    ["admin", "merchant_owner", "merchant_staff", "warehouse_clerk", "courier", "customer", "customer_service"];

/// Every route of the API, and what each role gets from it, in the order of `ROLES`.
/// Routes that authenticate differently are listed with why.
fn route_matrix() -> Vec<(&'static str, &'static str, Option<[Expect; 7]>)> {
    use Expect::*;
    vec![
        ("get", "/orders/{id}", Some([Ok, Ok, Ok, Ok, Ok, Ok, Ok])),
        ("get", "/orders/{id}/events", Some([Ok, Ok, Ok, Ok, Ok, Ok, Ok])),
        // The command sent is ASSIGN_COURIER.
        ("post", "/orders/{id}/commands", Some([Ok, Ok, Ok, Forbidden, Forbidden, Forbidden, Forbidden])),
        ("post", "/orders", Some([Ok, Ok, Ok, Forbidden, Hidden, Ok, Forbidden])),
        ("get", "/orders", Some([Ok, Ok, Ok, Ok, Ok, Ok, Ok])),
        ("post", "/merchants", Some([AdminOnly; 7])),
        ("post", "/merchants/{id}/warehouses", Some([Ok, Ok, Forbidden, Forbidden, Hidden, Hidden, Forbidden])),
        ("post", "/merchants/{id}/couriers", Some([Ok, Ok, Forbidden, Forbidden, Hidden, Hidden, Forbidden])),
        ("post", "/merchants/{id}/devices", Some([Ok, Ok, Forbidden, Forbidden, Hidden, Hidden, Forbidden])),
        ("post", "/merchants/{id}/customers", Some([Ok, Ok, Ok, Forbidden, Hidden, Hidden, Forbidden])),
        ("put", "/warehouses/{id}/stock/{sku}", Some([Ok, Ok, Ok, Ok, Hidden, Hidden, Forbidden])),
        ("get", "/warehouses/{id}/stock", Some([Ok, Ok, Ok, Ok, Hidden, Hidden, Forbidden])),
        ("get", "/admin/audit/verify", Some([AdminOnly; 7])),
        ("get", "/admin/users", Some([AdminOnly; 7])),
        ("post", "/admin/users", Some([AdminOnly; 7])),
        ("post", "/admin/users/{id}/password", Some([AdminOnly; 7])),
        ("post", "/admin/users/{id}/revoke", Some([AdminOnly; 7])),
        ("post", "/admin/users/{id}/unlock", Some([AdminOnly; 7])),
        ("post", "/admin/users/{id}/couriers", Some([AdminOnly; 7])),
        ("put", "/admin/users/{id}/role", Some([AdminOnly; 7])),
        ("get", "/customers/{id}/export", Some([Ok, Ok, Ok, Forbidden, Hidden, Ok, Forbidden])),
        ("get", "/merchants/{id}/contacts", Some([Ok, Ok, Ok, Forbidden, Hidden, Hidden, Forbidden])),
        ("post", "/customers/{id}/erase", Some([Ok, Ok, Forbidden, Forbidden, Hidden, Ok, Forbidden])),
        // A photo of the order's goods.
        ("put", "/orders/{id}/evidence/{sha256}", Some([Ok, Ok, Ok, Forbidden, Ok, Ok, Ok])),
        ("get", "/orders/{id}/evidence/{sha256}", Some([Ok, Ok, Ok, Ok, Ok, Ok, Ok])),
        ("get", "/orders/{id}/evidence", Some([Ok, Ok, Ok, Ok, Ok, Ok, Ok])),
        ("get", "/orders/{id}/trail", Some([Ok, Ok, Ok, Ok, Ok, Ok, Ok])),
        // Courier 0's positions: only they send them; the office reads them.
        ("post", "/couriers/{id}/positions", Some([Ok, Forbidden, Forbidden, Forbidden, Ok, Hidden, Forbidden])),
        ("get", "/couriers/{id}/positions", Some([Ok, Ok, Ok, Forbidden, Ok, Hidden, Ok])),
        ("post", "/couriers/{id}/exceptions", Some([Ok, Forbidden, Forbidden, Forbidden, Ok, Hidden, Forbidden])),
        ("get", "/merchants/{id}/operations", Some([Ok, Ok, Ok, Forbidden, Hidden, Hidden, Ok])),
        ("put", "/merchants/{id}/operations", Some([Ok, Ok, Forbidden, Forbidden, Hidden, Hidden, Forbidden])),
        ("put", "/warehouses/{id}/fence", Some([Ok, Ok, Forbidden, Forbidden, Hidden, Hidden, Forbidden])),
        // A customer sets their own quiet hours.
        ("put", "/customers/{id}/quiet-hours", Some([Ok, Ok, Ok, Forbidden, Hidden, Ok, Forbidden])),
        ("get", "/merchants/{id}/alerts", Some([Ok, Ok, Ok, Forbidden, Hidden, Hidden, Ok])),
        ("get", "/merchants/{id}/eta-accuracy", Some([Ok, Ok, Ok, Forbidden, Hidden, Hidden, Ok])),
        ("get", "/merchants/{id}/courier-locations", Some([Ok, Ok, Ok, Forbidden, Hidden, Hidden, Ok])),
        ("get", "/merchants/{id}/couriers", Some([Ok, Ok, Ok, Forbidden, Hidden, Hidden, Ok])),
        ("post", "/admin/rules/sweep", Some([AdminOnly; 7])),
        // Planning moves the orders the other cases rely on, and takes seconds: tested in tests/operations.rs.
        ("post", "/merchants/{id}/plans", None),
        ("get", "/couriers/{id}/route", None),
        // Releasing a pin and unlocking a route change nothing the other cases rely on.
        ("put", "/orders/{id}/pin", Some([Ok, Ok, Ok, Forbidden, Forbidden, Forbidden, Forbidden])),
        ("put", "/couriers/{id}/route-lock", Some([Ok, Ok, Ok, Forbidden, Hidden, Hidden, Forbidden])),
        // Whoever may read the order and speaks for the merchant or the customer shares it.
        ("post", "/orders/{id}/tracking-links", Some([Ok, Ok, Ok, Forbidden, Ok, Ok, Ok])),
        // Needs a signed order: raised in tests/tracking.rs; any reader lists them.
        ("post", "/orders/{id}/after-sales", None),
        ("get", "/orders/{id}/after-sales", Some([Ok, Ok, Ok, Ok, Ok, Ok, Ok])),
        // The link itself is the credential: tested in tests/tracking.rs.
        ("get", "/tracking/{token}", None),
        // A courier goes on duty themselves, or dispatchers put them on.
        ("get", "/couriers/{id}/duty", Some([Ok, Ok, Ok, Forbidden, Ok, Hidden, Ok])),
        ("put", "/couriers/{id}/duty", Some([Ok, Ok, Ok, Forbidden, Ok, Hidden, Forbidden])),
        // Needs an alert: tested with the rules (tests/operations.rs).
        ("post", "/alerts/{id}/acknowledge", None),
        // Authenticated by the gateway's signature, tested on its own.
        ("post", "/payments/{gateway}/notifications", None),
        // Public map data, and routes for anyone logged in: tested on their own.
        ("get", "/map/roads", None),
        ("get", "/map/route", None),
        // Public: they are how one gets a token.
        ("post", "/auth/login", None),
        ("post", "/auth/refresh", None),
        ("post", "/auth/logout", None),
    ]
}

async fn every_route_refuses_every_role_what_it_may_not_reach(backend: Backend) -> Result<()> {
    let (server, admin, a) = setup(backend).await?;
    let b = Shop::open(&admin).await?;
    // The matrix must name every route the server has.
    let doc = admin.get("/api/v1/openapi.json").await?.json();
    let mut routes = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().cloned().unwrap_or_default() {
        for method in item.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
            routes.insert((method, path.clone()));
        }
    }
    let matrix = route_matrix();
    let listed: std::collections::BTreeSet<(String, String)> =
        matrix.iter().map(|(m, p, _)| (m.to_string(), p.to_string())).collect();
    ensure!(
        routes == listed,
        "routes without a case: {:?}; cases without a route: {:?}",
        routes.difference(&listed).collect::<Vec<_>>(),
        listed.difference(&routes).collect::<Vec<_>>()
    );

    let links = |role: &str| match role {
        "admin" => json!({}),
        "warehouse_clerk" => json!({"merchantId": a.merchant, "warehouseId": a.warehouse}),
        "courier" => json!({"courierId": a.couriers[0]}),
        "customer" => json!({"customerId": a.prepaid_customer}),
        _ => json!({"merchantId": a.merchant}),
    };
    let mut clients = Vec::new();
    for role in ROLES {
        clients.push(user(&server, &admin, &format!("m.{role}"), role, links(role)).await?);
    }
    let spare = user(&server, &admin, "m.spare", "courier", json!({"courierId": a.couriers[1]})).await;
    let spare_id =
        admin.get("/api/v1/admin/users").await?.json().as_array().and_then(|u| {
            u.iter().find(|u| u["username"] == "m.spare").and_then(|u| u["id"].as_str().map(str::to_owned))
        });
    ensure!(spare.is_ok() && spare_id.is_some());
    let spare_id = spare_id.unwrap_or_default();

    // Own object: awaiting picking in A's warehouse, for A's customer, with courier 0.
    let own = a.place(&admin, &a.spinach()).await?;
    admin.command(&own, json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}})).await?;
    admin.command(&own, json!({"type": "ASSIGN_COURIER", "courierId": a.couriers[0]})).await?;
    let foreign = b.place(&admin, &b.spinach()).await?;
    admin.command(&foreign, json!({"type": "ASSIGN_COURIER", "courierId": b.couriers[0]})).await?;
    let (photo_sha, photo) = {
        let mut png = Vec::new();
        image::RgbImage::from_pixel(32, 24, image::Rgb([40, 160, 60]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
        let sha = xianlu_domain::evidence::evidence_digest(xianlu_domain::evidence::EvidenceKind::Photo, &png, None);
        use base64::Engine;
        let image = base64::engine::general_purpose::STANDARD.encode(&png);
        (sha, json!({"kind": "PHOTO", "image": image, "takenAt": "2030-06-01T01:00:00Z"}))
    };

    for (method, path, expectations) in &matrix {
        let Some(expectations) = expectations else { continue };
        for (i, role) in ROLES.iter().enumerate() {
            let client = &clients[i];
            for mine in [true, false] {
                let (shop, order) = if mine { (&a, &own) } else { (&b, &foreign) };
                let concrete = path
                    .replace("/orders/{id}", &format!("/orders/{order}"))
                    .replace("/merchants/{id}", &format!("/merchants/{}", shop.merchant))
                    .replace("/warehouses/{id}", &format!("/warehouses/{}", shop.warehouse))
                    .replace("{sku}", "SPINACH")
                    .replace("/customers/{id}", &format!("/customers/{}", shop.prepaid_customer))
                    .replace("/users/{id}", &format!("/users/{spare_id}"))
                    .replace("/couriers/{id}", &format!("/couriers/{}", shop.couriers[0]))
                    .replace("{sha256}", &photo_sha);
                let body = match *path {
                    "/orders/{id}/evidence/{sha256}" => photo.clone(),
                    "/couriers/{id}/exceptions" => json!({"kind": "VEHICLE_BREAKDOWN", "note": "爆胎"}),
                    "/couriers/{id}/positions" => json!({"fixes": [{"deviceSeq": 1, "at": "2025-06-01T01:00:00Z",
                        "lat": 39.93, "lng": 116.42, "accuracyM": 5.0}]}),
                    "/orders/{id}/commands" => {
                        json!({"command": {"type": "ASSIGN_COURIER", "courierId": shop.couriers[0]}})
                    }
                    "/orders" => shop.spinach(),
                    "/merchants" => json!({"name": "新商户", "orderPrefix": "NW", "timeZone": "Asia/Shanghai"}),
                    "/merchants/{id}/warehouses" => {
                        json!({"name": "仓", "address": "地址", "location": {"lat": 39.9, "lng": 116.4}})
                    }
                    "/merchants/{id}/couriers" => json!({"name": "王", "phone": "13900000000", "vehicle": "van"}),
                    "/merchants/{id}/devices" => json!({"kind": "scale", "warehouseId": shop.warehouse}),
                    "/merchants/{id}/customers" => json!({"businessName": "店", "kind": "SHOP", "address": "地址",
                        "location": {"lat": 39.9, "lng": 116.4}, "paymentTerms": {"kind": "PREPAID"}}),
                    "/warehouses/{id}/stock/{sku}" => {
                        json!({"name": "有机菠菜", "dimension": "grams", "onHandBase": 50_000})
                    }
                    "/admin/users" => {
                        json!({"username": format!("new.{role}.{mine}"), "password": PASSWORD, "role": "admin"})
                    }
                    "/admin/users/{id}/password" => json!({"password": PASSWORD}),
                    "/admin/users/{id}/couriers" => json!({"courierId": shop.couriers[1]}),
                    "/admin/users/{id}/role" => json!({"role": "courier", "courierId": shop.couriers[1]}),
                    "/orders/{id}/pin" => json!({"courierId": null}),
                    "/couriers/{id}/route-lock" => json!({"locked": false}),
                    "/couriers/{id}/duty" => json!({"onDuty": true}),
                    _ => json!({}),
                };
                let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())?;
                let body = (method != reqwest::Method::GET).then_some(&body);
                let concrete = if *path == "/merchants/{id}/contacts" {
                    format!("{concrete}?phone=13800000001")
                } else {
                    concrete
                };
                let reply = client.send(method.clone(), &format!("/api/v1{concrete}"), body, None).await?;
                let expected = expectations[i];
                let ok = match (expected, mine) {
                    (Expect::AdminOnly, _) if *role == "admin" => (200..300).contains(&reply.status),
                    (Expect::AdminOnly, _) => reply.status == 403,
                    // An administrator reaches every merchant.
                    (_, false) if *role == "admin" => (200..300).contains(&reply.status),
                    (Expect::Ok, true) => (200..300).contains(&reply.status),
                    (Expect::Forbidden, true) => reply.status == 403,
                    // Lists never fail: they hold nothing foreign.
                    (_, false) if *path == "/orders" && method == reqwest::Method::GET => {
                        reply.status == 200 && !String::from_utf8_lossy(&reply.bytes).contains(foreign.as_str())
                    }
                    _ => reply.status == 404,
                };
                ensure!(
                    ok,
                    "{method} {path} as {role} on {} object: expected {expected:?}, got {} {}",
                    if mine { "its own" } else { "a foreign" },
                    reply.status,
                    String::from_utf8_lossy(&reply.bytes)
                );
            }
        }
    }
    server.stop().await;
    Ok(())
}

/// A TLS client that accepts `cert` and speaks only `version`.
fn tls_client(
    cert: &rcgen::CertifiedKey<rcgen::KeyPair>,
    version: &'static rustls::SupportedProtocolVersion,
) -> Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone())?;
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[version])?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)))
}

async fn https_speaks_tls_1_3_with_hsts_and_can_refuse_tls_1_2(backend: Backend) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    let dir = std::env::temp_dir().join(format!("xianlu-tls-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("cert.pem"), cert.cert.pem())?;
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem())?;
    let db = xianlu_tests::TestDb::create(backend).await?;
    let server = TestServer::spawn_with(db, |c| {
        c.tls_cert = Some(dir.join("cert.pem"));
        c.tls_key = Some(dir.join("key.pem"));
        c.tls13_only = true;
    })
    .await?;
    ensure!(server.url.starts_with("https://"));
    let address = server.url.trim_start_matches("https://").to_owned();
    let name = rustls::pki_types::ServerName::try_from("localhost")?;

    let tcp = tokio::net::TcpStream::connect(&address).await?;
    let mut tls = tls_client(&cert, &rustls::version::TLS13)?.connect(name.clone(), tcp).await?;
    ensure!(tls.get_ref().1.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3));
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await?;
    let mut answer = String::new();
    let _ = tls.read_to_string(&mut answer).await;
    ensure!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    ensure!(answer.to_lowercase().contains("strict-transport-security: max-age=31536000"), "HSTS: {answer}");

    let tcp = tokio::net::TcpStream::connect(&address).await?;
    let refused = tls_client(&cert, &rustls::version::TLS12)?.connect(name, tcp).await;
    ensure!(refused.is_err(), "a TLS 1.2 handshake must fail in TLS-1.3-only mode");
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Every personal-data ciphertext, and for SQLite the raw database files.
async fn stored_bytes(server: &TestServer) -> Result<Vec<u8>> {
    database_bytes(&server.db.url).await
}

async fn database_bytes(url: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if url.starts_with("sqlite") {
        let path = url.trim_start_matches("sqlite://").to_owned();
        for suffix in ["", "-wal"] {
            if let Ok(bytes) = std::fs::read(format!("{path}{suffix}")) {
                out.extend(bytes);
            }
        }
    } else {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
        let rows: Vec<(Vec<u8>, Vec<u8>)> =
            sqlx::query_as("SELECT name_ct, phone_ct FROM personal_data").fetch_all(&mut conn).await?;
        for (name, phone) in rows {
            out.extend(name);
            out.extend(phone);
        }
        let text: Vec<(String,)> = sqlx::query_as(
            "SELECT coalesce(string_agg(t::text, ' '), '') FROM (SELECT * FROM customers) t UNION ALL \
             SELECT coalesce(string_agg(t::text, ' '), '') FROM (SELECT * FROM events) t UNION ALL \
             SELECT coalesce(string_agg(t::text, ' '), '') FROM (SELECT * FROM audit_log) t UNION ALL \
             SELECT coalesce(string_agg(t::text, ' '), '') FROM (SELECT * FROM devices) t UNION ALL \
             SELECT coalesce(string_agg(t::text, ' '), '') FROM (SELECT * FROM sessions) t",
        )
        .fetch_all(&mut conn)
        .await?;
        for (t,) in text {
            out.extend(t.into_bytes());
        }
    }
    Ok(out)
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

async fn personal_data_is_encrypted_at_rest_and_erasure_shreds_it_but_keeps_the_orders(backend: Backend) -> Result<()> {
    let (server, admin, shop) = setup(backend).await?;
    let id = shop.place(&admin, &shop.spinach()).await?;
    deliver(&admin, &shop, &id).await?;
    let view = admin.order(&id).await?;
    ensure!(view["driverInfo"]["phone"] == "13812340001", "the API decrypts for those who may see it");
    let stored = stored_bytes(&server).await?;
    ensure!(!stored.is_empty());
    for plaintext in ["13812340001", "13800000001", "王五", "张三"] {
        ensure!(!holds(&stored, plaintext), "{plaintext} is stored in plaintext");
    }
    ensure!(holds(&stored, "老王饭店"), "business names are business data, stored as they are");

    let export = admin.get(&format!("/api/v1/customers/{}/export", shop.prepaid_customer)).await?.json();
    ensure!(export["contacts"][0]["phone"] == "13800000001" && export["contacts"][0]["name"] == "王五", "{export}");
    let found =
        admin.get(&format!("/api/v1/merchants/{}/contacts?phone=%2B86%20138-0000-0001", shop.merchant)).await?.json();
    ensure!(
        found[0]["customerId"] == shop.prepaid_customer.as_str() && found[0]["businessName"] == "老王饭店",
        "{found}"
    );
    ensure!(export["orders"].as_array().map_or(0, Vec::len) == 1);
    let erase = admin.post(&format!("/api/v1/customers/{}/erase", shop.prepaid_customer), &json!({})).await?;
    ensure!(erase.status == 204);
    let export = admin.get(&format!("/api/v1/customers/{}/export", shop.prepaid_customer)).await?.json();
    ensure!(export["contacts"][0]["erased"] == true && export["contacts"][0]["phone"].is_null(), "{export}");
    ensure!(export["orders"].as_array().map_or(0, Vec::len) == 1, "orders stay");
    ensure!(admin.order(&id).await?["status"] == "DELIVERING");
    let report = admin.get("/api/v1/admin/audit/verify").await?.json();
    ensure!(report["problems"] == json!([]), "the audit chain still verifies: {report}");
    server.stop().await;
    Ok(())
}

async fn the_logs_of_a_whole_order_lifecycle_hold_no_phone_address_or_token(backend: Backend) -> Result<()> {
    let db = xianlu_tests::TestDb::create(backend).await?;
    let program = std::path::Path::new(env!("CARGO_BIN_EXE_xianlu-server-under-test"));
    // As talkative as the server gets.
    let process =
        ServerProcess::start(program, &[("XIANLU_DATABASE_URL", db.url.as_str()), ("RUST_LOG", "trace")]).await?;
    let admin = Client::new(&process.url, "admin:root");
    let shop = Shop::open(&admin).await?;
    admin.ok("/api/v1/admin/users", &json!({"username": "owner.log", "password": PASSWORD, "role": "merchant_owner", "merchantId": shop.merchant})).await?;
    let (owner, tokens) = Client::login(&process.url, "owner.log", PASSWORD).await?;
    let id = shop.place(&owner, &shop.spinach()).await?;
    deliver(&owner, &shop, &id).await?;
    let signature = upload_signature(&admin, &id, 1).await?;
    admin.command(&id, json!({"type": "SIGN", "signatureSha256": signature})).await?;
    owner.get(&format!("/api/v1/orders/{id}")).await?;
    owner.get(&format!("/api/v1/customers/{}/export", shop.prepaid_customer)).await?;
    let refreshed = Client::new(&process.url, "-")
        .ok("/api/v1/auth/refresh", &json!({"refreshToken": tokens["refreshToken"]}))
        .await?;
    let mut stream =
        Stream::connect_with_token(&process.url, refreshed["accessToken"].as_str().unwrap_or_default()).await?;
    stream.subscribe(json!([{"order": id}]), Some(0)).await?;
    stream.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = process.logs();
    ensure!(logs.len() > 10_000 && logs.contains("http"), "the server logged ({} bytes)", logs.len());
    let secrets = [
        ("a contact's phone", "13800000001".to_owned()),
        ("a courier's phone", "13812340001".to_owned()),
        ("a contact's name", "王五".to_owned()),
        ("a courier's name", "张三".to_owned()),
        ("an address", "东四北大街".to_owned()),
        ("a password", PASSWORD.to_owned()),
        ("an access token", tokens["accessToken"].as_str().unwrap_or_default().to_owned()),
        ("a refresh token", tokens["refreshToken"].as_str().unwrap_or_default().to_owned()),
        ("a refreshed access token", refreshed["accessToken"].as_str().unwrap_or_default().to_owned()),
    ];
    for (what, secret) in secrets {
        ensure!(!secret.is_empty() && !logs.contains(&secret), "the log holds {what}");
    }
    process.stop().await;
    Ok(())
}

async fn a_device_key_is_stored_hashed_and_opens_nothing_but_readings(backend: Backend) -> Result<()> {
    let (server, admin, shop) = setup(backend).await?;
    let owner = user(&server, &admin, "owner.dev", "merchant_owner", json!({"merchantId": shop.merchant})).await?;
    let both = owner
        .post(
            &format!("/api/v1/merchants/{}/devices", shop.merchant),
            &json!({"kind": "scale", "warehouseId": shop.warehouse, "courierId": shop.couriers[0]}),
        )
        .await?;
    ensure!(both.status == 422 && both.code() == "device_scope", "one warehouse or one vehicle");
    let device = owner
        .ok(
            &format!("/api/v1/merchants/{}/devices", shop.merchant),
            &json!({"kind": "scale", "warehouseId": shop.warehouse}),
        )
        .await?;
    let key = device["apiKey"].as_str().unwrap_or_default().to_owned();
    ensure!(key.starts_with("xld_") && key.len() > 40);
    let http = reqwest::Client::new();
    let id = shop.place(&admin, &shop.spinach()).await?;
    for (method, path) in [
        (reqwest::Method::GET, "/api/v1/orders".to_owned()),
        (reqwest::Method::GET, format!("/api/v1/orders/{id}")),
        (reqwest::Method::GET, format!("/api/v1/warehouses/{}/stock", shop.warehouse)),
        (reqwest::Method::POST, format!("/api/v1/orders/{id}/commands")),
    ] {
        let reply = http
            .request(method.clone(), format!("{}{path}", server.url))
            .header("authorization", format!("Device {key}"))
            .json(&json!({"command": {"type": "CANCEL", "reason": "device"}}))
            .send()
            .await?;
        ensure!(reply.status() == 403, "{method} {path} let a device in: {}", reply.status());
    }
    let forged =
        http.get(format!("{}/api/v1/orders", server.url)).header("authorization", "Device xld_nope").send().await?;
    ensure!(forged.status() == 401);
    ensure!(!holds(&stored_bytes(&server).await?, &key), "the key is stored only as a hash");
    server.stop().await;
    Ok(())
}

async fn after_a_demo_run_the_database_holds_no_plaintext_phone_number(backend: Backend) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let db = xianlu_tests::TestDb::create(backend).await?;
    let program = std::path::Path::new(env!("CARGO_BIN_EXE_xianlu-server-under-test"));
    let settings = [("XIANLU_DATABASE_URL", db.url.as_str()), ("XIANLU_PAYMENT_WEBHOOK_SECRET", "demo-gateway-secret")];
    let process = ServerProcess::start(program, &settings).await?;
    let mut create = tokio::process::Command::new(program)
        .args(["user", "create", "admin", "--role", "admin", "--password-stdin"])
        .env("XIANLU_DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()?;
    create
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .await?;
    ensure!(create.wait().await?.success());
    let demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_xianlu-demo"))
        .args([process.url.as_str(), "--once"])
        .env("DEMO_ADMIN_PASSWORD", PASSWORD)
        .output()
        .await?;
    ensure!(demo.status.success(), "the demo failed: {}", String::from_utf8_lossy(&demo.stderr));
    ensure!(String::from_utf8_lossy(&demo.stdout).contains("KL"), "the demo placed orders");
    let stored = database_bytes(&db.url).await?;
    for phone in ["13800000001", "13812340001", "13812340002"] {
        ensure!(!holds(&stored, phone), "{phone} is stored in plaintext after the demo");
    }
    ensure!(holds(&stored, "老王饭店"), "the scan reads the stored data");
    process.stop().await;
    Ok(())
}

async fn the_command_line_imports_an_openstreetmap_extract_and_refuses_what_is_not_one(backend: Backend) -> Result<()> {
    let server = TestServer::spawn(backend).await?;
    let cli = |args: Vec<String>| {
        let url = server.db.url.clone();
        async move {
            anyhow::Ok(
                tokio::process::Command::new(env!("CARGO_BIN_EXE_xianlu-server-under-test"))
                    .args(args)
                    .env("XIANLU_DATABASE_URL", url)
                    .env("RUST_LOG", "warn")
                    .output()
                    .await?,
            )
        }
    };
    let map = concat!(env!("CARGO_MANIFEST_DIR"), "/data/maps/helsinki-center.osm.pbf");
    let imported = cli(vec!["import-map".into(), map.into()]).await?;
    let stdout = String::from_utf8_lossy(&imported.stdout);
    ensure!(imported.status.success(), "{stdout}{}", String::from_utf8_lossy(&imported.stderr));
    ensure!(stdout.contains("helsinki-center.osm.pbf") && stdout.contains("© OpenStreetMap contributors"), "{stdout}");
    let generated =
        cli(vec!["import-map".into(), "--generate".into(), "42".into(), "--size".into(), "12".into()]).await?;
    let stdout = String::from_utf8_lossy(&generated.stdout);
    ensure!(generated.status.success() && stdout.contains("generated: seed 42"), "{stdout}");
    ensure!(!stdout.contains("OpenStreetMap"), "a generated city credits nobody");

    let bogus = server.db.dir.clone().unwrap_or_default().join("not-a-map.osm.pbf");
    std::fs::write(&bogus, b"<osm version='0.6'></osm>")?;
    let refused = cli(vec!["import-map".into(), bogus.display().to_string()]).await?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    ensure!(refused.status.code() == Some(2) && stderr.contains("not a readable OpenStreetMap PBF file"), "{stderr}");
    // Nothing half-stored: the two good imports only, the newest one generated.
    let db = xianlu_server::db::Db::connect(&xianlu_server::db::DbOptions {
        url: server.db.url.clone(),
        sqlite_synchronous: "NORMAL".into(),
        max_connections: 2,
    })
    .await?;
    let router = xianlu_server::roads::load_latest(&db).await?.ok_or_else(|| anyhow::anyhow!("no network stored"))?;
    ensure!(router.network().source.starts_with("generated") && router.network().nodes.len() <= 144);
    server.stop().await;
    Ok(())
}

async fn the_map_serves_road_geometry_and_routes_from_the_imported_network(backend: Backend) -> Result<()> {
    let mut server = TestServer::spawn(backend).await?;
    let anonymous = Client::new(&server.url, "-");
    let bbox = "/api/v1/map/roads?bbox=24.935,60.164,24.954,60.179&zoom=16";
    let none = anonymous.get(bbox).await?;
    ensure!(none.status == 404 && none.json()["detail"].as_str().unwrap_or_default().contains("import-map"));
    let map = concat!(env!("CARGO_MANIFEST_DIR"), "/data/maps/helsinki-center.osm.pbf");
    server.import_map(env!("CARGO_BIN_EXE_xianlu-server-under-test"), &[map]).await?;
    let anonymous = Client::new(&server.url, "-");

    // Road geometry: public, credited, cacheable.
    let tile = anonymous.get(bbox).await?;
    ensure!(tile.status == 200, "{}", tile.status);
    let body = tile.json();
    let roads = body["roads"].as_array().map_or(0, Vec::len);
    ensure!(roads > 500 && body["attribution"] == "© OpenStreetMap contributors", "{roads} roads");
    ensure!(body["roads"][0]["polyline"].as_str().is_some_and(|p| !p.is_empty()));
    let etag = tile.headers.get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    ensure!(tile.headers.get("cache-control").is_some_and(|v| v.to_str().unwrap_or_default().contains("public")));
    let again = anonymous.send(reqwest::Method::GET, bbox, None, None).await?;
    ensure!(again.headers.get("etag").and_then(|v| v.to_str().ok()) == Some(etag.as_str()), "stable");
    let revalidated =
        xianlu_tests::http_client().get(format!("{}{bbox}", server.url)).header("if-none-match", &etag).send().await?;
    ensure!(revalidated.status() == 304);
    let overview = anonymous.get("/api/v1/map/roads?bbox=24.935,60.164,24.954,60.179&zoom=11").await?.json();
    ensure!(overview["roads"].as_array().map_or(usize::MAX, Vec::len) < roads / 2, "minor roads left out at low zoom");
    ensure!(anonymous.get("/api/v1/map/roads?bbox=24.9,60.2,24.8,60.1&zoom=14").await?.code() == "invalid_bbox");
    ensure!(anonymous.get("/api/v1/map/roads?bbox=20,50,30,70&zoom=14").await?.code() == "bbox_too_large");

    // Routes: for anyone logged in.
    let route = "/api/v1/map/route?from=60.1710,24.9410&to=60.1675,24.9480";
    ensure!(anonymous.get(route).await?.status == 401);
    let courier = server.client("courier:c1");
    let found = courier.get(route).await?;
    ensure!(found.status == 200, "{}", found.status);
    let found = found.json();
    let meters = found["meters"].as_f64().unwrap_or_default();
    ensure!((400.0..2000.0).contains(&meters) && found["seconds"].as_f64().unwrap_or_default() > 0.0, "{found}");
    ensure!(courier.get("/api/v1/map/route?from=91,0&to=60,24").await?.code() == "invalid_point");
    server.stop().await;
    Ok(())
}

async fn an_orders_trail_is_its_couriers_trusted_positions_from_dispatch_to_sign_off(backend: Backend) -> Result<()> {
    let (server, admin, shop) = setup(backend).await?;
    let id = shop.place(&admin, &shop.spinach()).await?;
    let courier = &shop.couriers[0];
    let fix = |seq: u64, at: chrono::DateTime<chrono::Utc>, lat: f64| json!({"deviceSeq": seq, "at": at, "lat": lat, "lng": 116.42, "accuracyM": 5.0});
    // Before dispatch: not on this order's trail.
    let before = chrono::Utc::now() - chrono::Duration::seconds(60);
    admin.ok(&format!("/api/v1/couriers/{courier}/positions"), &json!({"fixes": [fix(1, before, 39.90)]})).await?;
    deliver(&admin, &shop, &id).await?;
    let t0 = chrono::Utc::now();
    let ms = |n: i64| t0 + chrono::Duration::milliseconds(n);
    let fixes = json!({"fixes": [fix(2, ms(10), 39.9001), fix(3, ms(20), 39.9002), fix(4, ms(30), 39.95), fix(5, ms(40), 39.9003)]});
    let receipt = admin.ok(&format!("/api/v1/couriers/{courier}/positions"), &fixes).await?;
    ensure!(receipt["accepted"] == 4 && receipt["flagged"] == 1, "a 5 km jump in 10 ms is flagged: {receipt}");
    // Another courier's positions meanwhile are not this order's.
    let other = &shop.couriers[1];
    admin.ok(&format!("/api/v1/couriers/{other}/positions"), &json!({"fixes": [fix(1, ms(15), 39.80)]})).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let signature = upload_signature(&admin, &id, 3).await?;
    admin.command(&id, json!({"type": "SIGN", "signatureSha256": signature})).await?;
    // After sign-off: not on the trail either.
    admin
        .ok(
            &format!("/api/v1/couriers/{courier}/positions"),
            &json!({"fixes": [fix(6, chrono::Utc::now() + chrono::Duration::seconds(30), 39.9004)]}),
        )
        .await?;

    let geo = admin.get(&format!("/api/v1/orders/{id}/trail")).await?;
    ensure!(geo.content_type == "application/geo+json", "{}", geo.content_type);
    let coordinates = geo.json()["geometry"]["coordinates"].clone();
    ensure!(coordinates == json!([[116.42, 39.9001], [116.42, 39.9002], [116.42, 39.9003]]), "{coordinates}");
    let gpx = admin.get(&format!("/api/v1/orders/{id}/trail?format=gpx")).await?;
    let text = String::from_utf8_lossy(&gpx.bytes).into_owned();
    ensure!(gpx.content_type == "application/gpx+xml" && text.matches("<trkpt").count() == 3, "{text}");
    ensure!(text.contains("lat=\"39.9002000\" lon=\"116.4200000\""), "{text}");
    ensure!(admin.get(&format!("/api/v1/orders/{id}/trail?format=kml")).await?.code() == "invalid_format");
    // Bad fixes are refused whole: nothing of the batch is stored.
    let positions = format!("/api/v1/couriers/{courier}/positions");
    let future = json!({"fixes": [fix(7, chrono::Utc::now(), 39.9005), fix(8, chrono::Utc::now() + chrono::Duration::hours(2), 39.9006)]});
    ensure!(admin.post(&positions, &future).await?.code() == "fix_in_future");
    let off_the_globe = json!({"fixes": [fix(7, chrono::Utc::now(), 91.0)]});
    ensure!(admin.post(&positions, &off_the_globe).await?.code() == "invalid_fix");
    let too_many: Vec<Value> = (0..1001).map(|i| fix(100 + i, chrono::Utc::now(), 39.9)).collect();
    ensure!(admin.post(&positions, &json!({"fixes": too_many})).await?.code() == "too_many_fixes");
    let unknown = format!("/api/v1/couriers/{}/positions", uuid::Uuid::now_v7());
    ensure!(admin.post(&unknown, &json!({"fixes": []})).await?.status == 404);
    let stored = admin.get(&format!("{positions}?afterSeq=6")).await?.json();
    ensure!(stored.as_array().is_some_and(Vec::is_empty), "{stored}");
    server.stop().await;
    Ok(())
}

async fn the_command_line_creates_users_who_can_log_in(backend: Backend) -> Result<()> {
    let (server, _admin, shop) = setup(backend).await?;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_xianlu-server-under-test"))
        .args(["user", "create", "ops.root", "--role", "admin", "--password-stdin"])
        .env("XIANLU_DATABASE_URL", &server.db.url)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        stdin.write_all(format!("{PASSWORD}\n").as_bytes()).await?;
    }
    let output = child.wait_with_output().await?;
    ensure!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
    ensure!(!String::from_utf8_lossy(&output.stdout).contains(PASSWORD), "the password is not echoed");
    let (root, tokens) = Client::login(&server.url, "ops.root", PASSWORD).await?;
    ensure!(tokens["user"]["role"] == "admin");

    let users = root.get("/api/v1/admin/users").await?.json();
    ensure!(users.as_array().is_some_and(|u| u.iter().any(|u| u["username"] == "ops.root")));
    let role = tokio::process::Command::new(env!("CARGO_BIN_EXE_xianlu-server-under-test"))
        .args(["user", "role", "ops.root", "--role", "customer_service", "--merchant", &shop.merchant])
        .env("XIANLU_DATABASE_URL", &server.db.url)
        .env("RUST_LOG", "warn")
        .output()
        .await?;
    ensure!(role.status.success(), "{}", String::from_utf8_lossy(&role.stderr));
    ensure!(root.get("/api/v1/admin/users").await?.status == 403, "the new role applies at once");
    server.stop().await;
    Ok(())
}

async fn setup(backend: Backend) -> Result<(TestServer, Client, Shop)> {
    let server = TestServer::spawn(backend).await?;
    let admin = server.client("admin:root");
    let shop = Shop::open(&admin).await?;
    Ok((server, admin, shop))
}

fn status(order: &Value) -> &str {
    order["status"].as_str().unwrap_or_default()
}

async fn stock_of(client: &Client, shop: &Shop, sku: &str) -> Result<(i64, i64)> {
    let levels = client.get(&format!("/api/v1/warehouses/{}/stock", shop.warehouse)).await?.json();
    let level = levels.as_array().and_then(|l| l.iter().find(|s| s["sku"] == sku)).cloned().unwrap_or(Value::Null);
    Ok((level["onHandBase"].as_i64().unwrap_or(-1), level["reservedBase"].as_i64().unwrap_or(-1)))
}

async fn an_order_runs_from_creation_to_sign_off_and_is_repriced_on_actual_weight(backend: Backend) -> Result<()> {
    let (server, admin, shop) = setup(backend).await?;
    let staff = server.client("staff:picker-1");
    // 2 kg pork at 19.90 per 斤 (3980 fen/kg) and one box of ribs priced per kg, 5 kg nominal.
    let draft = shop.draft(json!([
        {"sku": "PORK-BELLY", "name": "五花肉", "quantity": 2, "unit": "kg", "price": {"fen": 1990, "per": "jin"}, "temperature": "CHILLED"},
        {"sku": "RIBS-BOX", "name": "猪肋排", "quantity": 1, "unit": "box", "nominalG": 5000, "price": {"fen": 4000, "per": "kg"}},
    ]));
    let created = admin.ok("/api/v1/orders", &draft).await?;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    ensure!(status(&created) == "CREATED");
    ensure!(created["number"].as_str().is_some_and(|n| n.starts_with("KL") && n.len() == 13), "number {created}");
    ensure!(created["totals"]["orderedFen"] == 7960 + 20000, "ordered total {}", created["totals"]);

    let paid = admin.command(&id, json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": "转账"}})).await?;
    ensure!(status(&paid) == "AWAITING_PICK", "paid → {}", status(&paid));
    ensure!(paid["totals"]["paidFen"] == 27960);
    ensure!(stock_of(&admin, &shop, "PORK-BELLY").await? == (20_000, 2_000));

    staff.command(&id, json!({"type": "START_PICKING"})).await?;
    // The scale says 2.1 kg of pork (within 10 %) and 5.2 kg for the box of ribs.
    let pork = staff.command(&id, json!({"type": "RECORD_PICK", "lineNo": 1, "base": 2100})).await?;
    ensure!(pork["lines"][0]["amountFen"] == 8358, "pork re-priced: {}", pork["lines"][0]);
    let too_heavy =
        staff.command_reply(&id, json!({"type": "RECORD_PICK", "lineNo": 2, "base": 1, "weightG": 6000}), None).await?;
    ensure!(too_heavy.status == 422 && too_heavy.code() == "pick_out_of_tolerance");
    staff.command(&id, json!({"type": "RECORD_PICK", "lineNo": 2, "base": 1, "weightG": 5200})).await?;
    let packed = staff.command(&id, json!({"type": "PACK"})).await?;
    ensure!(status(&packed) == "PACKED");
    // 多退少补: 83.58 + 208.00 charged against 279.60 paid → customer owes 11.98.
    ensure!(
        packed["totals"]["chargeFen"] == 8358 + 20800 && packed["totals"]["balanceFen"] == 1198,
        "{}",
        packed["totals"]
    );
    ensure!(stock_of(&admin, &shop, "PORK-BELLY").await? == (17_900, 0), "pork stock consumed");

    let no_courier = admin.command_reply(&id, json!({"type": "DISPATCH"}), None).await?;
    ensure!(no_courier.status == 422 && no_courier.code() == "no_courier");
    admin.command(&id, json!({"type": "ASSIGN_COURIER", "courierId": shop.couriers[0]})).await?;
    let courier = server.client(&format!("courier:{}", shop.couriers[0]));
    courier.command(&id, json!({"type": "DISPATCH"})).await?;

    // The seed's shape: orderId, status, driverInfo{name, phone, location}, eta, items[{name, quantity, unit}].
    let view = admin.order(&id).await?;
    ensure!(view["orderId"] == created["number"] && view["status"] == "DELIVERING");
    ensure!(
        view["driverInfo"]["name"] == "张三" && view["driverInfo"]["phone"] == "13812340001",
        "{}",
        view["driverInfo"]
    );
    ensure!(view.get("eta").is_some() && view["items"][0] == json!({"name": "五花肉", "quantity": 2, "unit": "kg"}));
    ensure!(view["customer"]["businessName"] == "老王饭店");

    // The customer rejects 300 g of pork as poor quality and signs for the rest.
    let signature = upload_signature(&courier, &id, 2).await?;
    let signed = courier
        .command(
            &id,
            json!({"type": "SIGN", "signatureSha256": signature, "lines": [{"lineNo": 1, "rejectedBase": 300, "reason": "QUALITY"}]}),
        )
        .await?;
    ensure!(status(&signed) == "SIGNED");
    ensure!(signed["lines"][0]["acceptance"]["acceptedBase"] == 1800 && signed["lines"][0]["amountFen"] == 7164);
    ensure!(signed["totals"]["balanceFen"] == 7164 + 20800 - 27960);
    let after = admin.command_reply(&id, json!({"type": "CANCEL", "reason": "too late"}), None).await?;
    ensure!(after.status == 409 && after.code() == "illegal_transition", "SIGNED stays terminal");

    let timeline: Vec<String> = admin.order(&id).await?["timeline"]
        .as_array()
        .map(|t| t.iter().map(|e| e["event"]["kind"]["type"].as_str().unwrap_or_default().to_owned()).collect())
        .unwrap_or_default();
    ensure!(
        timeline
            == [
                "CREATED",
                "PAID",
                "STOCK_CHECKED",
                "PICKING_STARTED",
                "LINE_PICKED",
                "LINE_PICKED",
                "PACKED",
                "COURIER_ASSIGNED",
                "DISPATCHED",
                "SIGNED"
            ],
        "timeline {timeline:?}"
    );
    // Events never carry personal data.
    let events = admin.get(&format!("/api/v1/orders/{id}/events")).await?;
    let text = String::from_utf8_lossy(&events.bytes);
    ensure!(!text.contains("张三") && !text.contains("13812340001") && !text.contains("王五"));
    server.stop().await;
    Ok(())
}

async fn a_short_line_goes_out_of_stock_and_is_resolved_by_substitution(backend: Backend) -> Result<()> {
    let (server, admin, shop) = setup(backend).await?;
    // 60 kg of spinach wanted, 50 kg on hand.
    let draft = shop.draft(json!([
        {"sku": "SPINACH", "name": "有机菠菜", "quantity": 120, "unit": "jin", "price": {"fen": 350, "per": "jin"}},
        {"sku": "EGG-TRAY", "name": "鸡蛋", "quantity": 2, "unit": "piece", "nominalG": 1800, "price": {"fen": 2800, "per": "piece"}},
    ]));
    let id = shop.place(&admin, &draft).await?;
    let paid = admin.command(&id, json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}})).await?;
    ensure!(status(&paid) == "OUT_OF_STOCK", "{}", status(&paid));
    ensure!(paid["lines"][0]["shortage"]["availableBase"] == 50_000);
    ensure!(stock_of(&admin, &shop, "SPINACH").await? == (50_000, 50_000));
    let premature = admin.command_reply(&id, json!({"type": "START_PICKING"}), None).await?;
    ensure!(premature.status == 409);

    let respond_by = (chrono::Utc::now() + chrono::Duration::minutes(30)).to_rfc3339();
    admin
        .command(
            &id,
            json!({"type": "PROPOSE_SUBSTITUTION", "lineNo": 1, "respondBy": respond_by,
                   "substitute": {"sku": "BOK-CHOY", "name": "上海青", "quantity": 60, "unit": "kg", "price": {"fen": 300, "per": "jin"}}}),
        )
        .await?;
    // 60 kg of bok choy is more than the 30 kg on hand: consent cannot be recorded.
    let customer = server.client(&format!("customer:{}", shop.prepaid_customer));
    let short =
        customer.command_reply(&id, json!({"type": "ANSWER_SUBSTITUTION", "lineNo": 1, "accept": true}), None).await?;
    ensure!(short.status == 409 && short.code() == "substitute_out_of_stock", "{short:?}");
    ensure!(stock_of(&admin, &shop, "BOK-CHOY").await? == (30_000, 0), "nothing half-reserved");

    admin
        .put(
            &format!("/api/v1/warehouses/{}/stock/BOK-CHOY", shop.warehouse),
            &json!({"name": "上海青", "dimension": "grams", "onHandBase": 80_000}),
        )
        .await?;
    let accepted = customer.command(&id, json!({"type": "ANSWER_SUBSTITUTION", "lineNo": 1, "accept": true})).await?;
    ensure!(status(&accepted) == "AWAITING_PICK");
    ensure!(accepted["lines"][2]["substituteFor"] == 1 && accepted["lines"][2]["sku"] == "BOK-CHOY");
    ensure!(accepted["lines"][0]["baseToShip"] == 0);
    ensure!(stock_of(&admin, &shop, "BOK-CHOY").await? == (80_000, 60_000));
    ensure!(stock_of(&admin, &shop, "SPINACH").await? == (50_000, 0), "the short line's reservation is released");
    server.stop().await;
    Ok(())
}

async fn an_unanswered_substitution_offer_ships_short_when_its_window_closes(backend: Backend) -> Result<()> {
    let db = xianlu_tests::TestDb::create(backend).await?;
    let server = TestServer::spawn_with(db, |c| c.timer_interval_ms = 200).await?;
    let admin = server.client("admin:root");
    let shop = Shop::open(&admin).await?;
    let draft = shop.draft(json!([
        {"sku": "SPINACH", "name": "有机菠菜", "quantity": 60, "unit": "kg", "price": {"fen": 350, "per": "jin"}},
    ]));
    let id = shop.place(&admin, &draft).await?;
    admin.command(&id, json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}})).await?;
    let respond_by = (chrono::Utc::now() + chrono::Duration::milliseconds(800)).to_rfc3339();
    admin
        .command(
            &id,
            json!({"type": "PROPOSE_SUBSTITUTION", "lineNo": 1, "respondBy": respond_by,
                   "substitute": {"sku": "BOK-CHOY", "name": "上海青", "quantity": 10, "unit": "kg", "price": {"fen": 300, "per": "jin"}}}),
        )
        .await?;
    let mut view = admin.order(&id).await?;
    for _ in 0..50 {
        if view["status"] == "AWAITING_PICK" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        view = admin.order(&id).await?;
    }
    ensure!(view["status"] == "AWAITING_PICK", "still {}", view["status"]);
    ensure!(view["order"]["lines"][0]["baseToShip"] == 50_000, "shipped what there is");
    let declined = view["timeline"]
        .as_array()
        .and_then(|t| t.iter().find(|e| e["event"]["kind"]["type"] == "SUBSTITUTION_DECLINED").cloned())
        .unwrap_or(Value::Null);
    ensure!(declined["event"]["kind"]["expired"] == true && declined["actor"]["kind"] == "system", "{declined}");
    server.stop().await;
    Ok(())
}

async fn a_caller_reads_its_own_change_at_once_even_from_the_hot_cache(backend: Backend) -> Result<()> {
    let (server, admin, shop) = setup(backend).await?;
    let id = shop.place(&admin, &shop.spinach()).await?;
    for round in 0..40 {
        // Warm the cache, change the order, read it straight back.
        let cached = admin.order(&id).await?["order"]["version"].as_u64().unwrap_or(0);
        let changed =
            admin.command(&id, json!({"type": "ASSIGN_COURIER", "courierId": shop.couriers[round % 2]})).await?;
        ensure!(changed["version"] == cached + 1);
        let read = admin.order(&id).await?;
        ensure!(
            read["order"]["version"] == cached + 1,
            "round {round}: read version {} after writing {}",
            read["order"]["version"],
            cached + 1
        );
    }
    server.stop().await;
    Ok(())
}

async fn a_credit_customer_order_is_paid_and_stock_checked_at_creation(backend: Backend) -> Result<()> {
    let (server, admin, shop) = setup(backend).await?;
    let mut draft = shop.spinach();
    draft["customerId"] = json!(shop.credit_customer);
    draft["contactId"] = Value::Null;
    let mismatch = admin.post("/api/v1/orders", &draft).await?;
    ensure!(mismatch.status == 422 && mismatch.code() == "payment_terms_mismatch");
    draft["paymentTerms"] = json!({"kind": "CREDIT", "days": 30});
    let created = admin.ok("/api/v1/orders", &draft).await?;
    ensure!(status(&created) == "AWAITING_PICK" && created["version"] == 3, "{}", status(&created));
    ensure!(created["payment"]["method"]["kind"] == "CREDIT_TERMS" && created["totals"]["paidFen"] == 0);
    ensure!(created["totals"]["balanceFen"] == 1400, "the customer owes 14.00 on account");
    server.stop().await;
    Ok(())
}

async fn cancelling_after_packing_puts_the_goods_back_in_stock(backend: Backend) -> Result<()> {
    let (server, admin, shop) = setup(backend).await?;
    let id = shop.place(&admin, &shop.spinach()).await?;
    admin.command(&id, json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}})).await?;
    admin.command(&id, json!({"type": "START_PICKING"})).await?;
    admin.command(&id, json!({"type": "RECORD_PICK", "lineNo": 1, "base": 1950})).await?;
    admin.command(&id, json!({"type": "PACK"})).await?;
    ensure!(stock_of(&admin, &shop, "SPINACH").await? == (48_050, 0));
    let cancelled = admin.command(&id, json!({"type": "CANCEL", "reason": "餐厅临时歇业"})).await?;
    ensure!(status(&cancelled) == "CANCELLED" && cancelled["totals"]["balanceFen"] == -1400, "refund 14.00");
    ensure!(stock_of(&admin, &shop, "SPINACH").await? == (50_000, 0), "stock returns");

    let other = shop.place(&admin, &shop.spinach()).await?;
    admin.command(&other, json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}})).await?;
    ensure!(stock_of(&admin, &shop, "SPINACH").await? == (50_000, 2_000));
    admin.command(&other, json!({"type": "CANCEL", "reason": "下错单"})).await?;
    ensure!(stock_of(&admin, &shop, "SPINACH").await? == (50_000, 0), "reservation released");
    server.stop().await;
    Ok(())
}

async fn deliver(admin: &Client, shop: &Shop, id: &str) -> Result<()> {
    admin.command(id, json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}})).await?;
    admin.command(id, json!({"type": "START_PICKING"})).await?;
    admin.command(id, json!({"type": "RECORD_PICK", "lineNo": 1, "base": 2000})).await?;
    admin.command(id, json!({"type": "PACK"})).await?;
    admin.command(id, json!({"type": "ASSIGN_COURIER", "courierId": shop.couriers[0]})).await?;
    admin.command(id, json!({"type": "DISPATCH"})).await?;
    Ok(())
}

async fn a_refused_delivery_returns_and_a_damaged_one_becomes_a_claim(backend: Backend) -> Result<()> {
    let (server, admin, shop) = setup(backend).await?;
    let refused = shop.place(&admin, &shop.spinach()).await?;
    deliver(&admin, &shop, &refused).await?;
    admin
        .command(&refused, json!({"type": "REPORT_EXCEPTION", "kind": "CUSTOMER_REFUSED", "note": "说没订过"}))
        .await?;
    admin.command(&refused, json!({"type": "START_RETURN", "reason": "拒收"})).await?;
    let returned = admin.command(&refused, json!({"type": "CONFIRM_RETURNED"})).await?;
    ensure!(status(&returned) == "RETURNED" && returned["totals"]["balanceFen"] == -1400);

    let damaged = shop.place(&admin, &shop.spinach()).await?;
    deliver(&admin, &shop, &damaged).await?;
    // Seed scenario 2: an accident, a nearby courier takes over.
    admin
        .command(&damaged, json!({"type": "REPORT_EXCEPTION", "kind": "TRAFFIC_ACCIDENT", "note": "东三环追尾"}))
        .await?;
    let resumed = admin.command(&damaged, json!({"type": "RESUME_DELIVERY", "courierId": shop.couriers[1]})).await?;
    ensure!(resumed["courierId"] == shop.couriers[1].as_str() && status(&resumed) == "DELIVERING");
    admin
        .command(&damaged, json!({"type": "REPORT_EXCEPTION", "kind": "DAMAGED_IN_TRANSIT", "note": "箱子压坏"}))
        .await?;
    let claim = admin
        .command(&damaged, json!({"type": "OPEN_CLAIM", "lines": [{"lineNo": 1, "base": 1000}], "note": "一半压烂"}))
        .await?;
    ensure!(status(&claim) == "CLAIM_OPEN" && claim["claim"]["claimedFen"] == 700);
    let too_much = admin.command_reply(&damaged, json!({"type": "SETTLE_CLAIM", "amountFen": 701}), None).await?;
    ensure!(too_much.status == 422);
    let settled = admin.command(&damaged, json!({"type": "SETTLE_CLAIM", "amountFen": 700})).await?;
    ensure!(status(&settled) == "CLAIM_SETTLED" && settled["totals"]["chargeFen"] == 700);
    server.stop().await;
    Ok(())
}

/// Sends one courier assignment per client at once, all expecting `version`;
/// checks that the losers got 409 with the new current version and returns
/// how many won.
async fn race_assignments(clients: &[Client], id: &str, shop: &Shop, version: u64) -> Result<usize> {
    let mut tasks = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        let id = id.to_owned();
        let courier = shop.couriers[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            client.command_reply(&id, json!({"type": "ASSIGN_COURIER", "courierId": courier}), Some(version)).await
        }));
    }
    let mut won = 0;
    for task in tasks {
        let reply = task.await??;
        match reply.status {
            200 => won += 1,
            409 => {
                ensure!(reply.code() == "version_conflict");
                ensure!(reply.json()["currentVersion"] == version + 1, "409 carries the current version");
            }
            other => anyhow::bail!("unexpected {other}"),
        }
    }
    Ok(won)
}

async fn of_concurrent_conflicting_commands_exactly_one_wins(backend: Backend) -> Result<()> {
    let (server, admin, shop) = setup(backend).await?;
    let id = shop.place(&admin, &shop.spinach()).await?;
    let paid = admin.command(&id, json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}})).await?;
    let version = paid["version"].as_u64().unwrap_or(0);
    let won = race_assignments(&vec![admin.clone(); 8], &id, &shop, version).await?;
    ensure!(won == 1, "{won} commands won");
    let events = admin.get(&format!("/api/v1/orders/{id}/events")).await?.json();
    let assigned =
        events.as_array().map_or(0, |e| e.iter().filter(|e| e["event"]["kind"]["type"] == "COURIER_ASSIGNED").count());
    ensure!(assigned == 1);
    server.stop().await;
    Ok(())
}

async fn an_idempotent_request_is_executed_once_and_replayed_byte_for_byte(backend: Backend) -> Result<()> {
    let (server, admin, shop) = setup(backend).await?;
    let draft = shop.spinach();
    let post = reqwest::Method::POST;
    let first = admin.send(post.clone(), "/api/v1/orders", Some(&draft), Some("create-1")).await?;
    let again = admin.send(post.clone(), "/api/v1/orders", Some(&draft), Some("create-1")).await?;
    ensure!(first.status == 201 && again.status == 201);
    ensure!(first.bytes == again.bytes, "byte-identical replay");
    ensure!(again.headers.get("idempotent-replayed").is_some());
    let mut other = draft.clone();
    other["notes"] = json!("different");
    let reused = admin.send(post.clone(), "/api/v1/orders", Some(&other), Some("create-1")).await?;
    ensure!(reused.status == 422 && reused.code() == "idempotency_key_reused");

    // Ten concurrent requests with one key create one order.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let client = admin.clone();
        let draft = draft.clone();
        tasks.push(tokio::spawn(async move {
            client.send(reqwest::Method::POST, "/api/v1/orders", Some(&draft), Some("create-2")).await
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for task in tasks {
        let reply = task.await??;
        match reply.status {
            201 => {
                ids.insert(reply.json()["id"].as_str().unwrap_or_default().to_owned());
            }
            409 => ensure!(reply.code() == "idempotency_in_flight"),
            other => anyhow::bail!("unexpected {other}"),
        }
    }
    ensure!(ids.len() == 1, "one order created, not {}", ids.len());
    let list = admin.get(&format!("/api/v1/orders?merchantId={}", shop.merchant)).await?.json();
    ensure!(list["items"].as_array().map_or(0, Vec::len) == 2, "two orders in all");

    // Commands too: a retried payment is not applied twice.
    let id = ids.into_iter().next().unwrap_or_default();
    let pay = json!({"command": {"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}}});
    let path = format!("/api/v1/orders/{id}/commands");
    let a = admin.send(post.clone(), &path, Some(&pay), Some("pay-1")).await?;
    let b = admin.send(post.clone(), &path, Some(&pay), Some("pay-1")).await?;
    ensure!(a.status == 200 && a.bytes == b.bytes);
    // A rejected command's problem is replayed too.
    let pack = json!({"command": {"type": "PACK"}});
    let c = admin.send(post.clone(), &path, Some(&pack), Some("pack-1")).await?;
    let d = admin.send(post, &path, Some(&pack), Some("pack-1")).await?;
    ensure!(c.status == 409 && c.bytes == d.bytes);
    server.stop().await;
    Ok(())
}

async fn a_reconnecting_subscriber_receives_what_it_missed_exactly_once_then_live_events(
    backend: Backend,
) -> Result<()> {
    let (server, admin, shop) = setup(backend).await?;
    let topics = json!([{"merchant": shop.merchant}]);
    let mut stream = Stream::connect(&server.url, "merchant:ops").await?;
    let subscribed = stream.subscribe(topics.clone(), None).await?;
    let start = subscribed["head"].as_u64().unwrap_or(0);
    let id = shop.place(&admin, &shop.spinach()).await?;
    let first = stream.events(1).await?;
    ensure!(first[0]["event"]["kind"]["type"] == "CREATED" && first[0]["seq"].as_u64() > Some(start));
    let last_seen = first[0]["seq"].as_u64().unwrap_or(0);
    stream.close().await;

    // While away: payment (PAID + STOCK_CHECKED) and picking start.
    admin.command(&id, json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}})).await?;
    admin.command(&id, json!({"type": "START_PICKING"})).await?;

    let mut stream = Stream::connect(&server.url, "merchant:ops").await?;
    let subscribed = stream.subscribe(topics, Some(last_seen)).await?;
    let head = subscribed["head"].as_u64().unwrap_or(0);
    // The missed events come first, then CAUGHT_UP at the head; an event the
    // server had not yet fanned out when we subscribed may follow it live.
    let mut missed = Vec::new();
    let mut caught_up = None;
    while missed.len() < 3 || caught_up.is_none() {
        let message = stream.next().await?;
        match message["type"].as_str() {
            Some("EVENT") => missed.push(message),
            Some("CAUGHT_UP") => caught_up = Some(message),
            _ => anyhow::bail!("unexpected {message}"),
        }
    }
    ensure!(caught_up.is_some_and(|c| c["seq"] == head));
    let kinds: Vec<&str> = missed.iter().map(|e| e["event"]["kind"]["type"].as_str().unwrap_or_default()).collect();
    ensure!(kinds == ["PAID", "STOCK_CHECKED", "PICKING_STARTED"], "{kinds:?}");
    let seqs: Vec<u64> = missed.iter().map(|e| e["seq"].as_u64().unwrap_or(0)).collect();
    ensure!(seqs.windows(2).all(|w| w[1] == w[0] + 1) && seqs[0] > last_seen, "in order, none twice: {seqs:?}");
    ensure!(seqs[2] >= head, "everything up to the head was replayed");

    admin.command(&id, json!({"type": "RECORD_PICK", "lineNo": 1, "base": 2000})).await?;
    let live = stream.events(1).await?;
    ensure!(live[0]["event"]["kind"]["type"] == "LINE_PICKED" && live[0]["seq"] == seqs[2] + 1);
    ensure!(stream.is_quiet(Duration::from_millis(300)).await, "no duplicates");

    // An order subscription sees only its order.
    let mut single = Stream::connect(&server.url, "customer:c1").await?;
    single.subscribe(json!([{"order": id}]), None).await?;
    let other = shop.place(&admin, &shop.spinach()).await?;
    admin.command(&id, json!({"type": "PACK"})).await?;
    let got = single.events(1).await?;
    ensure!(got[0]["orderId"] == id.as_str() && got[0]["event"]["kind"]["type"] == "PACKED", "{other}");
    server.stop().await;
    Ok(())
}

async fn bad_input_gets_a_problem_document_and_changes_nothing(backend: Backend) -> Result<()> {
    let (server, admin, shop) = setup(backend).await?;
    let id = shop.place(&admin, &shop.spinach()).await?;
    let path = format!("/api/v1/orders/{id}/commands");
    let post = reqwest::Method::POST;
    let malformed = admin.raw(post.clone(), &path, "{\"command\": ", "application/json").await?;
    ensure!(malformed.status == 400 && malformed.code() == "malformed_json");
    ensure!(malformed.json()["requestId"].is_string(), "problems carry the request id");
    let unknown_field = admin.post(&path, &json!({"command": {"type": "PACK"}, "hurry": true})).await?;
    ensure!(unknown_field.status == 422 && unknown_field.code() == "invalid_body");
    let wrong_type =
        admin.post(&path, &json!({"command": {"type": "RECORD_PICK", "lineNo": "one", "base": 1}})).await?;
    ensure!(wrong_type.status == 422 && wrong_type.code() == "invalid_body");
    let unknown_command = admin.post(&path, &json!({"command": {"type": "TELEPORT"}})).await?;
    ensure!(unknown_command.status == 422);
    let no_type = admin.raw(post.clone(), &path, "{}", "text/plain").await?;
    ensure!(no_type.status == 400 && no_type.code() == "unsupported_media_type");
    let huge = "x".repeat(300 * 1024);
    let oversize = admin.post(&path, &json!({"command": {"type": "CANCEL", "reason": huge}})).await?;
    ensure!(oversize.status == 413 && oversize.code() == "body_too_large");
    let unknown_order = admin
        .post("/api/v1/orders/01900000-0000-7000-8000-000000000000/commands", &json!({"command": {"type": "PACK"}}))
        .await?;
    ensure!(unknown_order.status == 404 && unknown_order.code() == "not_found");
    let illegal = admin.post(&path, &json!({"command": {"type": "DISPATCH"}})).await?;
    ensure!(illegal.status == 409 && illegal.code() == "illegal_transition");
    let internal = admin.post(&path, &json!({"command": {"type": "CHECK_STOCK", "lines": []}})).await?;
    ensure!(internal.status == 422 && internal.code() == "internal_command");
    let forged = admin
        .post(
            &path,
            &json!({"command": {"type": "MARK_PAID", "method": {"kind": "GATEWAY", "gateway": "x", "reference": "y"}}}),
        )
        .await?;
    ensure!(forged.status == 422 && forged.code() == "gateway_payment_via_webhook");
    let anonymous = Client::new(&server.url, "nobody").get(&format!("/api/v1/orders/{id}")).await?;
    ensure!(anonymous.status == 401 && anonymous.code() == "unauthorized");
    let no_route = admin.get("/api/v1/nothing-here").await?;
    ensure!(no_route.status == 404 && no_route.code() == "not_found");

    // Impossible quantities in a new order: nothing is written.
    for bad_line in [
        json!({"sku": "SPINACH", "name": "菠菜", "quantity": -1, "unit": "kg", "price": {"fen": 350, "per": "jin"}}),
        json!({"sku": "SPINACH", "name": "菠菜", "quantity": 0.0001, "unit": "kg", "price": {"fen": 350, "per": "jin"}}),
        json!({"sku": "EGG-TRAY", "name": "鸡蛋", "quantity": 0.5, "unit": "box", "nominalG": 1800, "price": {"fen": 1, "per": "box"}}),
        json!({"sku": "EGG-TRAY", "name": "鸡蛋", "quantity": 2, "unit": "box", "price": {"fen": 1, "per": "box"}}),
    ] {
        let reply = admin.post("/api/v1/orders", &shop.draft(json!([bad_line]))).await?;
        ensure!(reply.status == 422, "{bad_line} → {}", reply.status);
    }
    let view = admin.order(&id).await?;
    ensure!(
        view["order"]["version"] == 1 && view["timeline"].as_array().map_or(0, Vec::len) == 1,
        "nothing half-written"
    );
    let list = admin.get(&format!("/api/v1/orders?merchantId={}", shop.merchant)).await?.json();
    ensure!(list["items"].as_array().map_or(0, Vec::len) == 1);
    let bad_query = admin.get("/api/v1/orders?status=LOST").await?;
    ensure!(bad_query.status == 400 && bad_query.code() == "invalid_query");
    server.stop().await;
    Ok(())
}

async fn a_signed_payment_notification_secures_payment_once(backend: Backend) -> Result<()> {
    let (server, admin, shop) = setup(backend).await?;
    let id = shop.place(&admin, &shop.spinach()).await?;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/payments/generic/notifications", server.url);
    let notify = |body: String, timestamp: i64, signature: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            http.post(url)
                .header("content-type", "application/json")
                .header("x-xianlu-timestamp", timestamp.to_string())
                .header("x-xianlu-signature", signature)
                .body(body)
                .send()
                .await
        }
    };
    let now = chrono::Utc::now().timestamp();
    let body = json!({"orderId": id, "reference": "wx-0001", "amountFen": 1400, "status": "SUCCEEDED"}).to_string();
    let forged = notify(body.clone(), now, "v1=00".into()).await?;
    ensure!(forged.status() == 401);
    let stale = notify(body.clone(), now - 3600, signed_notification(&body, now - 3600)).await?;
    ensure!(stale.status() == 401, "outside the replay window");
    let wrong_amount =
        json!({"orderId": id, "reference": "wx-0000", "amountFen": 1, "status": "SUCCEEDED"}).to_string();
    let short = notify(wrong_amount.clone(), now, signed_notification(&wrong_amount, now)).await?;
    ensure!(short.status() == 422);
    let ok = notify(body.clone(), now, signed_notification(&body, now)).await?;
    ensure!(ok.status() == 200, "{}", ok.text().await?);
    let replay = notify(body.clone(), now, signed_notification(&body, now)).await?;
    ensure!(replay.status() == 200);
    let view = admin.order(&id).await?;
    ensure!(view["status"] == "AWAITING_PICK" && view["order"]["payment"]["method"]["reference"] == "wx-0001");
    let paid_events =
        view["timeline"].as_array().map_or(0, |t| t.iter().filter(|e| e["event"]["kind"]["type"] == "PAID").count());
    ensure!(paid_events == 1, "paid once");
    ensure!(view["timeline"][1]["actor"] == json!({"kind": "gateway", "id": "generic"}));
    server.stop().await;
    Ok(())
}

async fn tamper(server: &TestServer, sql: &'static str) -> Result<()> {
    if server.db.url.starts_with("sqlite") {
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&server.db.url).await?;
        sqlx::query(sql).execute(&mut conn).await?;
    } else {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&server.db.url).await?;
        sqlx::query(sql).execute(&mut conn).await?;
    }
    Ok(())
}

async fn the_audit_chain_detects_edited_inserted_and_deleted_rows(backend: Backend) -> Result<()> {
    let (server, admin, shop) = setup(backend).await?;
    let id = shop.place(&admin, &shop.spinach()).await?;
    admin.command(&id, json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}})).await?;
    let report = admin.get("/api/v1/admin/audit/verify").await?.json();
    ensure!(report["problems"] == json!([]) && report["entries"].as_u64() >= Some(10), "{report}");
    let owner = user(&server, &admin, "owner.audit", "merchant_owner", json!({"merchantId": shop.merchant})).await?;
    let forbidden = owner.get("/api/v1/admin/audit/verify").await?;
    ensure!(forbidden.status == 403 && forbidden.code() == "forbidden");

    tamper(&server, "UPDATE audit_log SET actor_id = 'someone-else' WHERE chain_seq = 3").await?;
    let report = admin.get("/api/v1/admin/audit/verify").await?.json();
    ensure!(report["problems"].to_string().contains("entry 3 was edited"), "{report}");
    tamper(&server, "DELETE FROM audit_log WHERE chain_seq = 5").await?;
    let report = admin.get("/api/v1/admin/audit/verify").await?.json();
    ensure!(report["problems"].to_string().contains("deleted or inserted"), "{report}");
    tamper(&server, "DELETE FROM audit_log WHERE chain_seq = (SELECT MAX(chain_seq) FROM audit_log)").await?;
    let report = admin.get("/api/v1/admin/audit/verify").await?.json();
    ensure!(report["problems"].to_string().contains("head says"), "{report}");
    server.stop().await;
    Ok(())
}

async fn orders_are_listed_with_filters_and_cursor_pages(backend: Backend) -> Result<()> {
    let (server, admin, shop) = setup(backend).await?;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(shop.place(&admin, &shop.spinach()).await?);
    }
    admin.command(&ids[1], json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}})).await?;
    admin.command(&ids[3], json!({"type": "ASSIGN_COURIER", "courierId": shop.couriers[1]})).await?;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/orders?merchantId={}&limit=2&cursor={c}", shop.merchant),
            None => format!("/api/v1/orders?merchantId={}&limit=2", shop.merchant),
        };
        let page = admin.get(&path).await?.json();
        for order in page["items"].as_array().cloned().unwrap_or_default() {
            seen.push(order["id"].as_str().unwrap_or_default().to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    ensure!(seen == newest_first, "pages cover every order once, newest first");
    let paid = admin.get("/api/v1/orders?status=AWAITING_PICK").await?.json();
    ensure!(paid["items"].as_array().map_or(0, Vec::len) == 1 && paid["items"][0]["id"] == ids[1].as_str());
    let by_courier = admin.get(&format!("/api/v1/orders?courierId={}", shop.couriers[1])).await?.json();
    ensure!(by_courier["items"][0]["id"] == ids[3].as_str());
    let future = admin.get("/api/v1/orders?from=2099-01-01T00:00:00Z").await?.json();
    ensure!(future["items"] == json!([]));
    let past = admin.get("/api/v1/orders?to=2000-01-01T00:00:00Z").await?.json();
    ensure!(past["items"] == json!([]));
    // By number as well as by id.
    let number = admin.order(&ids[0]).await?["orderId"].as_str().unwrap_or_default().to_owned();
    ensure!(number.ends_with("001"));
    ensure!(admin.order(&number).await?["order"]["id"] == ids[0].as_str());
    server.stop().await;
    Ok(())
}

async fn stream_sequences_are_gap_free_in_commit_order(backend: Backend) -> Result<()> {
    let (server, admin, shop) = setup(backend).await?;
    let mut stream = Stream::connect(&server.url, "merchant:ops").await?;
    let head = stream.subscribe(json!([{"merchant": shop.merchant}]), None).await?["head"].as_u64().unwrap_or(0);
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let admin = admin.clone();
        let draft = shop.spinach();
        tasks.push(tokio::spawn(async move {
            let order = admin.ok("/api/v1/orders", &draft).await?;
            let id = order["id"].as_str().unwrap_or_default().to_owned();
            admin.command(&id, json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}})).await?;
            admin.command(&id, json!({"type": "START_PICKING"})).await?;
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    // 6 orders × (CREATED, PAID, STOCK_CHECKED, PICKING_STARTED)
    let events = stream.events(24).await?;
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap_or(0)).collect();
    let expected: Vec<u64> = (head + 1..=head + 24).collect();
    ensure!(seqs == expected, "gap-free and in order: {seqs:?}");
    ensure!(stream.is_quiet(Duration::from_millis(300)).await);
    server.stop().await;
    Ok(())
}

async fn operations_endpoints_answer(backend: Backend) -> Result<()> {
    let (server, admin, shop) = setup(backend).await?;
    shop.place(&admin, &shop.spinach()).await?;
    let anon = Client::new(&server.url, "-");
    ensure!(anon.get("/healthz").await?.status == 200);
    let ready = anon.get("/readyz").await?;
    ensure!(ready.status == 200);
    let metrics = String::from_utf8(anon.get("/metrics").await?.bytes)?;
    for name in ["xianlu_http_request_duration_seconds", "xianlu_order_events_total", "xianlu_stream_subscribers"] {
        ensure!(metrics.contains(name), "metrics lack {name}");
    }
    let doc = anon.get("/api/v1/openapi.json").await?.json();
    ensure!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")));
    ensure!(doc["paths"]["/orders/{id}/commands"]["post"].is_object());
    let docs = anon.get("/api/v1/docs").await?;
    ensure!(docs.status == 200 && String::from_utf8_lossy(&docs.bytes).contains("openapi.json"));
    ensure!(anon.get("/healthz").await?.headers.get("x-request-id").is_some());
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_server_processes_on_one_postgres_agree_on_every_change() -> Result<()> {
    let db = xianlu_tests::TestDb::create(Backend::Postgres).await?;
    let program = std::path::Path::new(env!("CARGO_BIN_EXE_xianlu-server-under-test"));
    // Replicas share the master keys for personal data, as they must: here
    // through the environment, as from a secret store.
    let keys = format!("k1 {};k2 {}", b64_std(&[7u8; 32]), b64_std(&[9u8; 32]));
    let settings = [("XIANLU_DATABASE_URL", db.url.as_str()), ("XIANLU_DATA_KEYS", keys.as_str())];
    let (a, b) = tokio::try_join!(ServerProcess::start(program, &settings), ServerProcess::start(program, &settings))?;
    let admin_a = Client::new(&a.url, "admin:root");
    let admin_b = Client::new(&b.url, "admin:root");
    let shop = Shop::open(&admin_a).await?;
    let id = shop.place(&admin_a, &shop.spinach()).await?;
    let paid = admin_a.command(&id, json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}})).await?;
    let version = paid["version"].as_u64().unwrap_or(0);

    // B serves the order from its cache, and its stream follows the merchant.
    ensure!(admin_b.order(&id).await?["order"]["version"] == version);
    let mut stream = Stream::connect(&b.url, "merchant:ops").await?;
    stream.subscribe(json!([{"merchant": shop.merchant}]), None).await?;

    // Conflicting commands through both processes: exactly one wins.
    let clients: Vec<Client> = (0..10).map(|i| if i % 2 == 0 { admin_a.clone() } else { admin_b.clone() }).collect();
    let won = race_assignments(&clients, &id, &shop, version).await?;
    ensure!(won == 1, "{won} won across two processes");

    // A change committed through A reaches B's subscriber and B's cache within a second.
    let started = std::time::Instant::now();
    admin_a.command(&id, json!({"type": "START_PICKING"})).await?;
    let events = stream.events(2).await?;
    ensure!(events[0]["event"]["kind"]["type"] == "COURIER_ASSIGNED");
    ensure!(events[1]["event"]["kind"]["type"] == "PICKING_STARTED");
    ensure!(started.elapsed() < Duration::from_secs(1), "pushed across processes in {:?}", started.elapsed());
    let fresh = admin_b.order(&id).await?;
    ensure!(
        fresh["status"] == "PICKING" && fresh["order"]["version"] == version + 2,
        "B serves fresh state: {}",
        fresh["status"]
    );
    stream.close().await;
    drop((a, b));
    Ok(())
}
