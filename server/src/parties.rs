//! Merchants, warehouses, customers, couriers and stock: the records orders
//! refer to. Contact people's and couriers' names and phones go to
//! `personal_data` only.

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use xianlu_domain::wire::LatLng;
use xianlu_domain::{ContactId, CourierId, CustomerId, Dimension, MerchantId, PaymentTerms, WarehouseId};

use crate::audit;
use crate::db::Tx;
use crate::error::{ApiError, ApiResult};
use crate::on_tx;
use crate::policy::{self, Action};
use crate::service::{OrderService, RequestCtx, StockLevel};
use crate::vault::Personal;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewMerchant {
    pub name: String,
    /// 2–8 capital letters that start every order number, e.g. `KL`.
    pub order_prefix: String,
    /// IANA time zone for business dates and cut-offs, e.g. `Asia/Shanghai`.
    pub time_zone: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Merchant {
    pub id: MerchantId,
    pub name: String,
    pub order_prefix: String,
    pub time_zone: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewWarehouse {
    pub name: String,
    pub address: String,
    pub location: LatLng,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Warehouse {
    pub id: WarehouseId,
    pub merchant_id: MerchantId,
    pub name: String,
    pub address: String,
    pub location: LatLng,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CustomerKind {
    Restaurant,
    Shop,
}

/// A contact person (personal data).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewContact {
    pub name: String,
    pub phone: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewCustomer {
    pub business_name: String,
    pub kind: CustomerKind,
    pub address: String,
    pub location: LatLng,
    pub payment_terms: PaymentTerms,
    #[serde(default)]
    pub contacts: Vec<NewContact>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    pub id: CustomerId,
    pub merchant_id: MerchantId,
    pub business_name: String,
    pub kind: CustomerKind,
    pub address: String,
    pub location: LatLng,
    pub payment_terms: PaymentTerms,
    pub contact_ids: Vec<ContactId>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewCourier {
    pub name: String,
    pub phone: String,
    pub vehicle: String,
    #[serde(default)]
    pub refrigerated: bool,
    /// What the vehicle carries, kilograms (default 500).
    #[serde(default)]
    pub capacity_kg: Option<u32>,
    /// The room in the vehicle, litres (default 1 000).
    #[serde(default)]
    pub capacity_l: Option<u32>,
}

/// A van's capacity when none is given.
pub const DEFAULT_CAPACITY_KG: u32 = 500;
/// A van's room when none is given: a cubic metre.
pub const DEFAULT_CAPACITY_L: u32 = 1000;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Courier {
    pub id: CourierId,
    pub merchant_id: MerchantId,
    pub vehicle: String,
    pub refrigerated: bool,
    pub capacity_kg: u32,
    pub capacity_l: u32,
}

/// Sets the counted stock of a SKU (reservations are kept).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StockCount {
    pub name: String,
    pub dimension: Dimension,
    /// Grams or pieces on hand.
    pub on_hand_base: i64,
    /// The room the SKU takes, millilitres per kilogram (weighed) or per
    /// piece (counted), for planning vans by volume; kept if not given.
    #[serde(default)]
    pub volume_ml: Option<i64>,
}

fn check(field: &str, text: &str, max: usize) -> ApiResult<()> {
    if text.trim().is_empty() || text.chars().count() > max {
        return Err(ApiError::unprocessable("invalid_body", format!("{field} must be 1–{max} characters")));
    }
    Ok(())
}

fn check_location(location: LatLng) -> ApiResult<()> {
    if !location.is_valid() {
        return Err(ApiError::unprocessable("invalid_location", "lat must be within ±90 and lng within ±180 (WGS-84)"));
    }
    Ok(())
}

fn dimension_name(d: Dimension) -> &'static str {
    match d {
        Dimension::Grams => "grams",
        Dimension::Pieces => "pieces",
    }
}

impl OrderService {
    pub(crate) async fn audit_admin(
        &self,
        tx: &mut Tx,
        ctx: &RequestCtx,
        merchant: Uuid,
        action: &str,
        subject: String,
        after: serde_json::Value,
    ) -> ApiResult<()> {
        let entry = ctx.audit_entry(merchant, self.clock.now(), action, subject, after);
        audit::append_all(tx, &[entry], self.anchor_every).await?;
        Ok(())
    }

    async fn merchant_exists(&self, tx: &mut Tx, id: MerchantId) -> ApiResult<()> {
        let found: Option<(Uuid,)> = on_tx!(tx, c => {
            sqlx::query_as("SELECT id FROM merchants WHERE id = $1").bind(id.uuid()).fetch_optional(&mut *c).await?
        });
        found.map(|_| ()).ok_or_else(|| ApiError::NotFound(format!("no merchant {id}")))
    }

    pub async fn create_merchant(&self, ctx: &RequestCtx, new: NewMerchant) -> ApiResult<Merchant> {
        policy::check_admin(&ctx.scope)?;
        check("name", &new.name, 200)?;
        let prefix_ok =
            (2..=8).contains(&new.order_prefix.len()) && new.order_prefix.bytes().all(|b| b.is_ascii_uppercase());
        if !prefix_ok {
            return Err(ApiError::unprocessable("invalid_body", "orderPrefix must be 2–8 capital letters"));
        }
        if new.time_zone.parse::<chrono_tz::Tz>().is_err() {
            return Err(ApiError::unprocessable(
                "invalid_time_zone",
                format!("{} is not an IANA time zone", new.time_zone),
            ));
        }
        let id = MerchantId(Uuid::now_v7());
        let mut tx = self.db.begin().await?;
        on_tx!(&mut tx, c => {
            sqlx::query("INSERT INTO merchants (id, name, order_prefix, time_zone, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(id.uuid())
                .bind(&new.name)
                .bind(&new.order_prefix)
                .bind(&new.time_zone)
                .bind(self.clock.now())
                .execute(&mut *c)
                .await?;
        });
        let merchant = Merchant { id, name: new.name, order_prefix: new.order_prefix, time_zone: new.time_zone };
        self.audit_admin(
            &mut tx,
            ctx,
            id.uuid(),
            "CREATE_MERCHANT",
            id.to_string(),
            serde_json::to_value(&merchant).unwrap_or_default(),
        )
        .await?;
        tx.commit().await?;
        Ok(merchant)
    }

    pub async fn create_warehouse(
        &self,
        ctx: &RequestCtx,
        merchant: MerchantId,
        new: NewWarehouse,
    ) -> ApiResult<Warehouse> {
        policy::check_merchant_action(&ctx.scope, merchant, Action::ManageWarehousesAndCouriers)?;
        check("name", &new.name, 200)?;
        check("address", &new.address, 500)?;
        check_location(new.location)?;
        let id = WarehouseId(Uuid::now_v7());
        let mut tx = self.db.begin().await?;
        self.merchant_exists(&mut tx, merchant).await?;
        on_tx!(&mut tx, c => {
            sqlx::query("INSERT INTO warehouses (id, merchant_id, name, address, lat, lng) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(id.uuid())
                .bind(merchant.uuid())
                .bind(&new.name)
                .bind(&new.address)
                .bind(new.location.lat)
                .bind(new.location.lng)
                .execute(&mut *c)
                .await?;
        });
        let warehouse =
            Warehouse { id, merchant_id: merchant, name: new.name, address: new.address, location: new.location };
        self.audit_admin(
            &mut tx,
            ctx,
            merchant.uuid(),
            "CREATE_WAREHOUSE",
            id.to_string(),
            serde_json::to_value(&warehouse).unwrap_or_default(),
        )
        .await?;
        tx.commit().await?;
        Ok(warehouse)
    }

    pub async fn create_customer(
        &self,
        ctx: &RequestCtx,
        merchant: MerchantId,
        new: NewCustomer,
    ) -> ApiResult<Customer> {
        policy::check_merchant_action(&ctx.scope, merchant, Action::ManageCustomers)?;
        check("businessName", &new.business_name, 200)?;
        check("address", &new.address, 500)?;
        check_location(new.location)?;
        if new.contacts.len() > 20 {
            return Err(ApiError::unprocessable("invalid_body", "at most 20 contacts"));
        }
        for contact in &new.contacts {
            check("contacts.name", &contact.name, 100)?;
            check("contacts.phone", &contact.phone, 40)?;
        }
        let id = CustomerId(Uuid::now_v7());
        let mut tx = self.db.begin().await?;
        self.merchant_exists(&mut tx, merchant).await?;
        let terms = serde_json::to_string(&new.payment_terms).unwrap_or_default();
        let kind = serde_json::to_value(new.kind).unwrap_or_default().as_str().unwrap_or("RESTAURANT").to_owned();
        on_tx!(&mut tx, c => {
            sqlx::query(
                "INSERT INTO customers (id, merchant_id, business_name, kind, address, lat, lng, payment_terms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(id.uuid())
            .bind(merchant.uuid())
            .bind(&new.business_name)
            .bind(kind)
            .bind(&new.address)
            .bind(new.location.lat)
            .bind(new.location.lng)
            .bind(terms)
            .execute(&mut *c)
            .await?;
        });
        let mut contact_ids = Vec::new();
        for contact in &new.contacts {
            let contact_id = ContactId(Uuid::now_v7());
            on_tx!(&mut tx, c => {
                sqlx::query("INSERT INTO contacts (id, customer_id) VALUES ($1, $2)")
                    .bind(contact_id.uuid())
                    .bind(id.uuid())
                    .execute(&mut *c)
                    .await?;
            });
            let personal = Personal { name: contact.name.clone(), phone: contact.phone.clone() };
            self.vault.store(&mut tx, contact_id.uuid(), &personal).await.map_err(ApiError::Internal)?;
            contact_ids.push(contact_id);
        }
        let customer = Customer {
            id,
            merchant_id: merchant,
            business_name: new.business_name,
            kind: new.kind,
            address: new.address,
            location: new.location,
            payment_terms: new.payment_terms,
            contact_ids,
        };
        // The audit entry holds the business record and contact ids, never names or phones.
        self.audit_admin(
            &mut tx,
            ctx,
            merchant.uuid(),
            "CREATE_CUSTOMER",
            id.to_string(),
            serde_json::to_value(&customer).unwrap_or_default(),
        )
        .await?;
        tx.commit().await?;
        Ok(customer)
    }

    pub async fn create_courier(&self, ctx: &RequestCtx, merchant: MerchantId, new: NewCourier) -> ApiResult<Courier> {
        policy::check_merchant_action(&ctx.scope, merchant, Action::ManageWarehousesAndCouriers)?;
        check("name", &new.name, 100)?;
        check("phone", &new.phone, 40)?;
        check("vehicle", &new.vehicle, 100)?;
        let capacity_kg = new.capacity_kg.unwrap_or(DEFAULT_CAPACITY_KG);
        if !(1..=40_000).contains(&capacity_kg) {
            return Err(ApiError::unprocessable("invalid_body", "capacityKg: between 1 and 40 000 kg"));
        }
        let capacity_l = new.capacity_l.unwrap_or(DEFAULT_CAPACITY_L);
        if !(1..=100_000).contains(&capacity_l) {
            return Err(ApiError::unprocessable("invalid_body", "capacityL: between 1 and 100 000 litres"));
        }
        let id = CourierId(Uuid::now_v7());
        let mut tx = self.db.begin().await?;
        self.merchant_exists(&mut tx, merchant).await?;
        on_tx!(&mut tx, c => {
            sqlx::query(
                "INSERT INTO couriers (id, merchant_id, vehicle, refrigerated, capacity_kg, capacity_l) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id.uuid())
            .bind(merchant.uuid())
            .bind(&new.vehicle)
            .bind(new.refrigerated)
            .bind(i64::from(capacity_kg))
            .bind(i64::from(capacity_l))
            .execute(&mut *c)
            .await?;
        });
        let personal = Personal { name: new.name.clone(), phone: new.phone.clone() };
        self.vault.store(&mut tx, id.uuid(), &personal).await.map_err(ApiError::Internal)?;
        let courier = Courier {
            id,
            merchant_id: merchant,
            vehicle: new.vehicle,
            refrigerated: new.refrigerated,
            capacity_kg,
            capacity_l,
        };
        self.audit_admin(
            &mut tx,
            ctx,
            merchant.uuid(),
            "CREATE_COURIER",
            id.to_string(),
            serde_json::to_value(&courier).unwrap_or_default(),
        )
        .await?;
        tx.commit().await?;
        Ok(courier)
    }

    pub async fn set_stock(
        &self,
        ctx: &RequestCtx,
        warehouse: WarehouseId,
        sku: &str,
        count: StockCount,
    ) -> ApiResult<StockLevel> {
        check("sku", sku, 64)?;
        check("name", &count.name, 200)?;
        if !(0..=xianlu_domain::machine::MAX_BASE * 100).contains(&count.on_hand_base) {
            return Err(ApiError::unprocessable("invalid_quantity", "onHandBase must be between 0 and 10 000 t"));
        }
        if count.volume_ml.is_some_and(|v| !(1..=10_000_000).contains(&v)) {
            return Err(ApiError::unprocessable("invalid_volume", "volumeMl must be between 1 ml and 10 m³ per unit"));
        }
        let mut tx = self.db.begin().await?;
        let merchant: Option<(Uuid,)> = on_tx!(&mut tx, c => {
            sqlx::query_as("SELECT merchant_id FROM warehouses WHERE id = $1").bind(warehouse.uuid()).fetch_optional(&mut *c).await?
        });
        let (merchant,) = merchant.ok_or_else(|| ApiError::NotFound(format!("no warehouse {warehouse}")))?;
        policy::check_stock(&ctx.scope, MerchantId(merchant), warehouse, Action::CountStock)?;
        let (reserved, volume_ml): (i64, Option<i64>) = on_tx!(&mut tx, c => {
            sqlx::query_as(
                "INSERT INTO stock (warehouse_id, sku, name, dimension, on_hand_base, reserved_base, volume_ml) \
                 VALUES ($1, $2, $3, $4, $5, 0, $6) \
                 ON CONFLICT (warehouse_id, sku) DO UPDATE SET name = $3, dimension = $4, on_hand_base = $5, \
                 volume_ml = COALESCE($6, stock.volume_ml) \
                 RETURNING reserved_base, volume_ml",
            )
            .bind(warehouse.uuid())
            .bind(sku)
            .bind(&count.name)
            .bind(dimension_name(count.dimension))
            .bind(count.on_hand_base)
            .bind(count.volume_ml)
            .fetch_one(&mut *c)
            .await?
        });
        let level = StockLevel {
            sku: sku.to_owned(),
            name: count.name,
            dimension: count.dimension,
            on_hand_base: count.on_hand_base,
            reserved_base: reserved,
            volume_ml,
        };
        self.audit_admin(
            &mut tx,
            ctx,
            merchant,
            "SET_STOCK",
            format!("{warehouse}/{sku}"),
            serde_json::to_value(&level).unwrap_or_default(),
        )
        .await?;
        tx.commit().await?;
        Ok(level)
    }

    /// The merchant a warehouse belongs to (404 for none).
    pub(crate) async fn warehouse_merchant(&self, warehouse: WarehouseId) -> ApiResult<MerchantId> {
        let merchant: Option<(Uuid,)> = crate::on_db!(&self.db, pool => {
            sqlx::query_as("SELECT merchant_id FROM warehouses WHERE id = $1").bind(warehouse.uuid()).fetch_optional(pool).await?
        });
        merchant.map(|(m,)| MerchantId(m)).ok_or_else(|| ApiError::NotFound(format!("no warehouse {warehouse}")))
    }

    pub async fn stock(&self, scope: &policy::Scope, warehouse: WarehouseId) -> ApiResult<Vec<StockLevel>> {
        let merchant = self.warehouse_merchant(warehouse).await?;
        policy::check_stock(scope, merchant, warehouse, Action::ReadStock)?;
        type Row = (String, String, String, i64, i64, Option<i64>);
        let rows: Vec<Row> = crate::on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT sku, name, dimension, on_hand_base, reserved_base, volume_ml FROM stock WHERE warehouse_id = $1 \
                 ORDER BY sku",
            )
            .bind(warehouse.uuid())
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(sku, name, dimension, on_hand_base, reserved_base, volume_ml)| StockLevel {
                sku,
                name,
                dimension: if dimension == "pieces" { Dimension::Pieces } else { Dimension::Grams },
                on_hand_base,
                reserved_base,
                volume_ml,
            })
            .collect())
    }
}

/// A contact person as exported: absent fields were erased.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportedContact {
    pub id: ContactId,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub erased: bool,
}

/// Everything held about a customer.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerExport {
    pub customer_id: CustomerId,
    pub merchant_id: MerchantId,
    pub business_name: String,
    pub address: String,
    pub contacts: Vec<ExportedContact>,
    pub orders: Vec<xianlu_domain::Order>,
}

impl OrderService {
    pub(crate) async fn customer_merchant(&self, customer: CustomerId) -> ApiResult<(MerchantId, String, String)> {
        let row: Option<(Uuid, String, String)> = crate::on_db!(&self.db, pool => {
            sqlx::query_as("SELECT merchant_id, business_name, address FROM customers WHERE id = $1")
                .bind(customer.uuid())
                .fetch_optional(pool)
                .await?
        });
        let (merchant, name, address) = row.ok_or_else(|| ApiError::NotFound("no such customer".into()))?;
        Ok((MerchantId(merchant), name, address))
    }

    async fn contact_ids(&self, customer: CustomerId) -> ApiResult<Vec<ContactId>> {
        let rows: Vec<(Uuid,)> = crate::on_db!(&self.db, pool => {
            sqlx::query_as("SELECT id FROM contacts WHERE customer_id = $1 ORDER BY id")
                .bind(customer.uuid())
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(|(id,)| ContactId(id)).collect())
    }

    /// Everything held about a customer, as JSON.
    pub async fn export_customer(&self, ctx: &RequestCtx, customer: CustomerId) -> ApiResult<CustomerExport> {
        let (merchant, business_name, address) = self.customer_merchant(customer).await?;
        policy::check_customer_data(&ctx.scope, merchant, customer, false)?;
        let mut contacts = Vec::new();
        for id in self.contact_ids(customer).await? {
            let personal = self.vault.load(&self.db, id.uuid()).await.map_err(ApiError::Internal)?;
            contacts.push(ExportedContact {
                id,
                erased: personal.is_none(),
                name: personal.as_ref().map(|p| p.name.clone()),
                phone: personal.map(|p| p.phone),
            });
        }
        let mut orders = Vec::new();
        let mut filter =
            crate::service::OrderFilter { customer_id: Some(customer.uuid()), limit: Some(200), ..Default::default() };
        loop {
            let page = self.list(&filter).await?;
            orders.extend(page.items);
            match page.next_cursor {
                Some(cursor) => filter.cursor = Some(cursor),
                None => break,
            }
        }
        Ok(CustomerExport { customer_id: customer, merchant_id: merchant, business_name, address, contacts, orders })
    }

    /// Erases a customer's personal data by destroying each contact's data
    /// key. Orders stay, as anonymised business records; the erasure is audited.
    pub async fn erase_customer(&self, ctx: &RequestCtx, customer: CustomerId) -> ApiResult<()> {
        let (merchant, _, _) = self.customer_merchant(customer).await?;
        policy::check_customer_data(&ctx.scope, merchant, customer, true)?;
        let contacts = self.contact_ids(customer).await?;
        let mut tx = self.db.begin().await?;
        for id in &contacts {
            crate::vault::Vault::shred(&mut tx, id.uuid()).await.map_err(ApiError::Internal)?;
        }
        // Signatures and photos may show the people: they go with the personal data.
        let evidence_erased = on_tx!(&mut tx, c => {
            sqlx::query("DELETE FROM evidence WHERE customer_id = $1")
                .bind(customer.uuid())
                .execute(&mut *c)
                .await?
                .rows_affected()
        });
        self.audit_admin(
            &mut tx,
            ctx,
            merchant.uuid(),
            "ERASE_CUSTOMER",
            customer.to_string(),
            serde_json::json!({"contactsErased": contacts.len(), "evidenceErased": evidence_erased}),
        )
        .await?;
        tx.commit().await?;
        self.cache.clear();
        Ok(())
    }
}

/// A contact found by phone number.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContactMatch {
    pub contact_id: ContactId,
    pub customer_id: CustomerId,
    pub business_name: String,
}

impl OrderService {
    /// The merchant's contacts with this phone number, found through the
    /// blind index (the number itself is never compared in the database).
    pub async fn find_contacts_by_phone(
        &self,
        ctx: &RequestCtx,
        merchant: MerchantId,
        phone: &str,
    ) -> ApiResult<Vec<ContactMatch>> {
        policy::check_merchant_action(&ctx.scope, merchant, Action::ManageCustomers)?;
        let subjects = self.vault.find_by_phone(&self.db, phone).await.map_err(ApiError::Internal)?;
        let mut found = Vec::new();
        for subject in subjects {
            let row: Option<(Uuid, String)> = crate::on_db!(&self.db, pool => {
                sqlx::query_as(
                    "SELECT c.id, c.business_name FROM contacts k JOIN customers c ON c.id = k.customer_id \
                     WHERE k.id = $1 AND c.merchant_id = $2",
                )
                .bind(subject)
                .bind(merchant.uuid())
                .fetch_optional(pool)
                .await?
            });
            if let Some((customer, business_name)) = row {
                found.push(ContactMatch {
                    contact_id: ContactId(subject),
                    customer_id: CustomerId(customer),
                    business_name,
                });
            }
        }
        Ok(found)
    }
}
