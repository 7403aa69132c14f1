//! Xianlu's shared Dioxus components, used by the courier, customer and
//! merchant apps: the vector [`map`] drawn from the server's map data (no
//! tile service needed), the order [`timeline`], the [`order`] card, and the
//! words they use in Chinese and English ([`i18n`]). **Components render
//! what they are given and call back what the user did; every network and
//! storage call belongs to `xianlu-core`.**

pub mod i18n;
pub mod map;
pub mod order;
pub mod signoff;
pub mod timeline;

pub use i18n::Lang;
pub use map::{MapLayers, MapView};
pub use order::OrderCard;
pub use timeline::Timeline;

/// The stylesheet the components expect (apps include it once).
pub const STYLE: &str = include_str!("style.css");
