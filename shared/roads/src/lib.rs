//! The road network every ETA and every route is computed on.
//!
//! A [`RoadNetwork`] is plain data (nodes in WGS-84, directed edges with a
//! length and a road class), imported from OpenStreetMap ([`osm`]) or
//! generated from a seed ([`generate`]). A [`Router`] prepares it once with
//! contraction hierarchies (`fast_paths`) and snaps positions to it with an
//! R-tree (`rstar`); after that a shortest path is a few microseconds, which
//! is what live ETAs and the planner's matrices need. **No hand-written
//! Dijkstra on the hot path.**

pub mod fence;
pub mod generate;
pub mod osm;

use fast_paths::{FastGraph, InputGraph, PathCalculator};
use rstar::RTree;
use rstar::primitives::GeomWithData;
use serde::{Deserialize, Serialize};
use xianlu_domain::wire::LatLng;

/// A road's class, which sets its default speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoadClass {
    Motorway,
    Trunk,
    Primary,
    Secondary,
    Tertiary,
    Unclassified,
    Residential,
    LivingStreet,
    Service,
}

impl RoadClass {
    /// Importance, 0 the highest: what a map shows first.
    pub fn rank(self) -> u8 {
        self as u8
    }

    /// Urban default speed in km/h when the road has no speed limit of its own.
    pub fn default_kmh(self) -> f32 {
        match self {
            RoadClass::Motorway => 80.0,
            RoadClass::Trunk => 60.0,
            RoadClass::Primary => 50.0,
            RoadClass::Secondary => 40.0,
            RoadClass::Tertiary => 35.0,
            RoadClass::Unclassified => 30.0,
            RoadClass::Residential => 25.0,
            RoadClass::LivingStreet => 10.0,
            RoadClass::Service => 15.0,
        }
    }
}

/// A directed road segment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RoadEdge {
    pub from: u32,
    pub to: u32,
    pub meters: f32,
    /// The speed a vehicle keeps on it with no traffic, km/h.
    pub kmh: f32,
    pub class: RoadClass,
}

impl RoadEdge {
    pub fn seconds(&self) -> f32 {
        self.meters / (self.kmh / 3.6)
    }
}

/// Nodes and directed edges; what is stored and shipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoadNetwork {
    /// Where it came from ("OpenStreetMap: FILE", "generated: seed …").
    pub source: String,
    /// Whether its data must be credited "© OpenStreetMap contributors".
    pub osm: bool,
    pub nodes: Vec<LatLng>,
    pub edges: Vec<RoadEdge>,
}

#[derive(Debug, thiserror::Error)]
pub enum RoadError {
    #[error("not a readable OpenStreetMap PBF file: {0}")]
    Unreadable(String),
    #[error("the map holds no drivable roads")]
    Empty,
    #[error("the road network is inconsistent: {0}")]
    Invalid(String),
}

/// Great-circle distance in metres.
pub fn distance_m(a: LatLng, b: LatLng) -> f64 {
    use geo::{Distance, Haversine, Point};
    Haversine.distance(Point::new(a.lng, a.lat), Point::new(b.lng, b.lat))
}

const METRES_PER_DEGREE: f64 = 111_320.0;

/// Local metres (equirectangular around latitude `lat0`): good enough for
/// nearest-point searches and shapes a few kilometres across.
pub(crate) fn local_xy(p: LatLng, lat0: f64) -> [f64; 2] {
    [p.lng * METRES_PER_DEGREE * lat0.to_radians().cos(), p.lat * METRES_PER_DEGREE]
}

/// Degrees of (latitude, longitude) that span `m` metres at latitude `lat0`.
pub(crate) fn degrees_for(m: f64, lat0: f64) -> (f64, f64) {
    (m / METRES_PER_DEGREE, m / (METRES_PER_DEGREE * lat0.to_radians().cos().max(0.01)))
}

impl RoadNetwork {
    /// Total length of the roads, kilometres (each direction counted once per edge).
    pub fn kilometres(&self) -> f64 {
        self.edges.iter().map(|e| f64::from(e.meters)).sum::<f64>() / 1000.0
    }

    /// Keeps the largest connected part (ignoring direction), renumbering
    /// nodes, so a position is never snapped onto an island.
    pub fn largest_component(self) -> RoadNetwork {
        let n = self.nodes.len();
        let mut parent: Vec<usize> = (0..n).collect();
        fn find(parent: &mut [usize], mut x: usize) -> usize {
            while parent[x] != x {
                parent[x] = parent[parent[x]];
                x = parent[x];
            }
            x
        }
        for e in &self.edges {
            let (a, b) = (find(&mut parent, e.from as usize), find(&mut parent, e.to as usize));
            if a != b {
                parent[a] = b;
            }
        }
        let mut size = vec![0usize; n];
        let mut used = vec![false; n];
        for e in &self.edges {
            used[e.from as usize] = true;
            used[e.to as usize] = true;
        }
        for (i, &u) in used.iter().enumerate() {
            if u {
                let r = find(&mut parent, i);
                size[r] += 1;
            }
        }
        let Some(best) = (0..n).max_by_key(|&i| size[i]) else { return self };
        let mut renumber = vec![u32::MAX; n];
        let mut nodes = Vec::new();
        for i in 0..n {
            if used[i] && find(&mut parent, i) == best {
                renumber[i] = nodes.len() as u32;
                nodes.push(self.nodes[i]);
            }
        }
        let edges = self
            .edges
            .iter()
            .filter(|e| renumber[e.from as usize] != u32::MAX)
            .map(|e| RoadEdge { from: renumber[e.from as usize], to: renumber[e.to as usize], ..*e })
            .collect();
        RoadNetwork { source: self.source, osm: self.osm, nodes, edges }
    }

    /// The roads with a point inside the box (`[min_lng, min_lat, max_lng,
    /// max_lat]`), each two-way road once, minor classes left out at low zoom
    /// (below 13 only primary roads and above; below 15 tertiary and above).
    pub fn segments_in(&self, bbox: [f64; 4], zoom: u8) -> Vec<(RoadClass, LatLng, LatLng)> {
        let minimum = match zoom {
            0..=12 => RoadClass::Primary.rank(),
            13..=14 => RoadClass::Tertiary.rank(),
            _ => u8::MAX,
        };
        let inside = |p: LatLng| p.lng >= bbox[0] && p.lng <= bbox[2] && p.lat >= bbox[1] && p.lat <= bbox[3];
        let mut seen = std::collections::HashSet::new();
        self.edges
            .iter()
            .filter(|e| e.class.rank() <= minimum)
            .filter(|e| seen.insert((e.from.min(e.to), e.from.max(e.to))))
            .map(|e| (e.class, self.nodes[e.from as usize], self.nodes[e.to as usize]))
            .filter(|(_, a, b)| inside(*a) || inside(*b))
            .collect()
    }

    fn check(&self) -> Result<(), RoadError> {
        if self.edges.is_empty() {
            return Err(RoadError::Empty);
        }
        let n = self.nodes.len() as u32;
        if let Some(e) = self.edges.iter().find(|e| e.from >= n || e.to >= n) {
            return Err(RoadError::Invalid(format!("edge {}→{} names a node that does not exist", e.from, e.to)));
        }
        if let Some(e) = self.edges.iter().find(|e| !(e.meters.is_finite() && e.meters >= 0.0 && e.kmh > 0.0)) {
            return Err(RoadError::Invalid(format!("edge {}→{} has no usable length or speed", e.from, e.to)));
        }
        if self.nodes.iter().any(|p| !p.is_valid()) {
            return Err(RoadError::Invalid("a node is not a WGS-84 position".into()));
        }
        Ok(())
    }
}

/// A route between two positions.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub meters: f64,
    /// Free-flow driving time (no traffic model applied).
    pub seconds: f64,
    /// The road geometry, from the road point nearest the start to the one nearest the end.
    pub points: Vec<LatLng>,
    /// How far the start and end were from the road, metres.
    pub snap_m: (f64, f64),
}

/// Weights are tenths of a second (fast_paths needs positive integers).
const WEIGHT_PER_SECOND: f64 = 10.0;

/// A prepared network: snapping and shortest paths.
pub struct Router {
    network: RoadNetwork,
    graph: FastGraph,
    index: RTree<GeomWithData<[f64; 2], u32>>,
    /// The latitude the index's local metres are taken around.
    lat0: f64,
    /// (from, to) → the fastest edge between them, for lengths along a path.
    lengths: std::collections::HashMap<(u32, u32), f32>,
    /// The same network as a customizable contraction hierarchy, for
    /// many-to-many matrices (one upward search per source against all
    /// targets at once, instead of a query per pair).
    matrices: cch::Cch,
    metric: cch::Metric,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("nodes", &self.network.nodes.len())
            .field("edges", &self.network.edges.len())
            .finish()
    }
}

impl Router {
    /// Prepares the network's largest connected part (contraction hierarchies).
    pub fn new(network: RoadNetwork) -> Result<Router, RoadError> {
        network.check()?;
        let network = network.largest_component();
        network.check()?;
        let mut input = InputGraph::new();
        let mut lengths = std::collections::HashMap::new();
        for e in &network.edges {
            if e.from == e.to {
                continue;
            }
            let weight = ((f64::from(e.seconds()) * WEIGHT_PER_SECOND).round() as usize).max(1);
            input.add_edge(e.from as usize, e.to as usize, weight);
            let slot = lengths.entry((e.from, e.to)).or_insert(e.meters);
            *slot = slot.min(e.meters);
        }
        input.freeze();
        let graph = fast_paths::prepare(&input);
        let (matrices, metric) = prepare_matrices(&network);
        let lat0 = network.nodes.iter().map(|p| p.lat).sum::<f64>() / network.nodes.len().max(1) as f64;
        let points =
            network.nodes.iter().enumerate().map(|(i, p)| GeomWithData::new(local_xy(*p, lat0), i as u32)).collect();
        Ok(Router { index: RTree::bulk_load(points), network, graph, lat0, lengths, matrices, metric })
    }

    pub fn network(&self) -> &RoadNetwork {
        &self.network
    }

    /// A calculator for many queries in a row (one per thread).
    pub fn calculator(&self) -> PathCalculator {
        fast_paths::create_calculator(&self.graph)
    }

    /// The road node nearest a position, and how far it is in metres.
    pub fn snap(&self, p: LatLng) -> Option<(u32, f64)> {
        let nearest = self.index.nearest_neighbor(&local_xy(p, self.lat0))?;
        Some((nearest.data, distance_m(p, self.network.nodes[nearest.data as usize])))
    }

    /// The fastest route between two positions.
    pub fn route(&self, calculator: &mut PathCalculator, from: LatLng, to: LatLng) -> Option<Route> {
        let (a, snap_a) = self.snap(from)?;
        let (b, snap_b) = self.snap(to)?;
        if a == b {
            let p = self.network.nodes[a as usize];
            return Some(Route { meters: 0.0, seconds: 0.0, points: vec![p], snap_m: (snap_a, snap_b) });
        }
        let path = calculator.calc_path(&self.graph, a as usize, b as usize)?;
        let nodes = path.get_nodes();
        let meters = nodes
            .windows(2)
            .map(|w| f64::from(self.lengths.get(&(w[0] as u32, w[1] as u32)).copied().unwrap_or_default()))
            .sum();
        Some(Route {
            meters,
            seconds: path.get_weight() as f64 / WEIGHT_PER_SECOND,
            points: nodes.iter().map(|&n| self.network.nodes[n]).collect(),
            snap_m: (snap_a, snap_b),
        })
    }

    /// Driving seconds from every source to every target (`None` where no
    /// road leads), as the route planner needs them. Sources are shared out
    /// over the machine's cores.
    pub fn matrix(&self, sources: &[LatLng], targets: &[LatLng]) -> Vec<Vec<Option<f64>>> {
        let snap =
            |points: &[LatLng]| -> Vec<Option<u32>> { points.iter().map(|p| self.snap(*p).map(|(n, _)| n)).collect() };
        let (from, to) = (snap(sources), snap(targets));
        // Unsnappable points take node 0 and are blanked afterwards.
        let target_nodes: Vec<u32> = to.iter().map(|t| t.unwrap_or(0)).collect();
        let row_of = |part: &[Option<u32>]| -> Vec<Vec<Option<f64>>> {
            let nodes: Vec<u32> = part.iter().map(|s| s.unwrap_or(0)).collect();
            let flat = cch::distance_matrix(&self.matrices.view(), &self.metric.view(), &nodes, &target_nodes);
            part.iter()
                .enumerate()
                .map(|(i, s)| {
                    to.iter()
                        .enumerate()
                        .map(|(j, t)| {
                            let w = flat[i * target_nodes.len() + j];
                            (s.is_some() && t.is_some() && w < cch::INF_WEIGHT)
                                .then(|| f64::from(w) / WEIGHT_PER_SECOND)
                        })
                        .collect()
                })
                .collect()
        };
        if sources.is_empty() || targets.is_empty() {
            return vec![Vec::new(); sources.len()];
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(sources.len());
        if threads <= 1 || sources.len() * targets.len() < 50_000 {
            return row_of(&from);
        }
        let chunk = sources.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let parts: Vec<_> = from.chunks(chunk).map(|part| scope.spawn(move || row_of(part))).collect();
            parts.into_iter().flat_map(|p| p.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
        })
    }
}

/// The network as a customizable contraction hierarchy with travel-time
/// weights (tenths of a second, as for routes), ordered by inertial-flow
/// nested dissection on the nodes' positions.
fn prepare_matrices(network: &RoadNetwork) -> (cch::Cch, cch::Metric) {
    let n = network.nodes.len();
    let mut arcs: Vec<(u32, u32, u32)> = network
        .edges
        .iter()
        .filter(|e| e.from != e.to)
        .map(|e| (e.from, e.to, ((f64::from(e.seconds()) * WEIGHT_PER_SECOND).round() as u32).max(1)))
        .collect();
    arcs.sort_unstable();
    let mut first_out = vec![0u32; n + 1];
    for (from, _, _) in &arcs {
        first_out[*from as usize + 1] += 1;
    }
    for i in 0..n {
        first_out[i + 1] += first_out[i];
    }
    let tail: Vec<u32> = arcs.iter().map(|a| a.0).collect();
    let graph = cch::graph::Graph {
        first_out,
        head: arcs.iter().map(|a| a.1).collect(),
        weight: arcs.iter().map(|a| a.2).collect(),
    };
    let latitude: Vec<f32> = network.nodes.iter().map(|p| p.lat as f32).collect();
    let longitude: Vec<f32> = network.nodes.iter().map(|p| p.lng as f32).collect();
    let order = cch::inertial_order(n as u32, &tail, &graph.head, &latitude, &longitude);
    let hierarchy = cch::Cch::build(&graph, &order);
    let metric = hierarchy.customize(&graph.weight);
    (hierarchy, metric)
}
