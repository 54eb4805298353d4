//! Fictional 10-K "Item 1. Business" filings: invented companies, so a model must read the
//! documents to answer. Each filing is split into section documents (overview, corporate
//! information, human capital, properties) plus an excerpt of another company's filing, and asks
//! four questions, one per [`Category`]. The traps real filings have are written in: a founding
//! year beside the incorporation year, a subsidiary incorporated in another state, a plant in
//! another state than the headquarters, full-time beside total employees, numbers written
//! `12,500`, and the other company's own facts.
//!
//! Deterministic: the same seed and count give the same samples on any machine (SplitMix64 draws;
//! its `below` is one IEEE multiplication, exact everywhere).

use serde_json::{json, Map, Value};

use crate::analysis::rng::SplitMix64;
use crate::prompt::{Document, Sample};

/// What a question asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    IncorporationState,
    IncorporationYear,
    EmployeeCount,
    HeadquartersState,
}

impl Category {
    pub const ALL: [Category; 4] = [
        Category::IncorporationState,
        Category::IncorporationYear,
        Category::EmployeeCount,
        Category::HeadquartersState,
    ];

    /// The sample's `category` field.
    pub fn key(self) -> &'static str {
        match self {
            Category::IncorporationState => "incorporation_state",
            Category::IncorporationYear => "incorporation_year",
            Category::EmployeeCount => "employee_count",
            Category::HeadquartersState => "headquarters_state",
        }
    }
}

const STATES: [&str; 30] = [
    "Delaware",
    "Nevada",
    "California",
    "Texas",
    "New York",
    "Ohio",
    "Florida",
    "Georgia",
    "Illinois",
    "Washington",
    "Colorado",
    "Oregon",
    "Minnesota",
    "Wisconsin",
    "Michigan",
    "Indiana",
    "Tennessee",
    "Virginia",
    "Maryland",
    "Massachusetts",
    "Pennsylvania",
    "New Jersey",
    "North Carolina",
    "Arizona",
    "Utah",
    "Missouri",
    "Kentucky",
    "Oklahoma",
    "Iowa",
    "Kansas",
];

/// A city in each of [`STATES`], same order.
const CITIES: [&str; 30] = [
    "Wilmington",
    "Reno",
    "San Jose",
    "Austin",
    "Rochester",
    "Columbus",
    "Tampa",
    "Atlanta",
    "Naperville",
    "Spokane",
    "Boulder",
    "Portland",
    "Rochester",
    "Madison",
    "Grand Rapids",
    "Fort Wayne",
    "Nashville",
    "Richmond",
    "Baltimore",
    "Worcester",
    "Pittsburgh",
    "Princeton",
    "Raleigh",
    "Tempe",
    "Provo",
    "St. Louis",
    "Lexington",
    "Tulsa",
    "Des Moines",
    "Wichita",
];

const NAME_FIRST: [&str; 24] = [
    "Brel", "Cor", "Dalv", "Ester", "Fann", "Gorv", "Hal", "Ilm", "Jor", "Kest", "Lun", "Morv",
    "Nal", "Ost", "Pell", "Quor", "Rud", "Sarn", "Tov", "Ulv", "Varn", "Wess", "Yor", "Zan",
];
const NAME_SECOND: [&str; 12] = [
    "ara", "ex", "ion", "ora", "ent", "ix", "ado", "yne", "ica", "ova", "erra", "eon",
];
const SUFFIX: [&str; 6] = [
    "Inc.",
    "Corporation",
    "Holdings, Inc.",
    "Technologies, Inc.",
    "Industries, Inc.",
    "Systems Corp.",
];

/// An industry: what the company makes, who buys it, and where it makes it.
struct Industry {
    products: &'static str,
    customers: &'static str,
    facility: &'static str,
}

const INDUSTRIES: [Industry; 8] = [
    Industry {
        products: "industrial pumps, valves and flow-control equipment",
        customers: "water utilities, chemical processors and energy producers",
        facility: "manufacturing plant",
    },
    Industry {
        products: "cloud software for inventory planning and warehouse management",
        customers: "mid-sized retailers and regional distributors",
        facility: "data center",
    },
    Industry {
        products: "packaged snack foods and private-label cereals",
        customers: "grocery chains, club stores and convenience retailers",
        facility: "production facility",
    },
    Industry {
        products: "diagnostic imaging components and laboratory instruments",
        customers: "hospitals, clinics and research laboratories",
        facility: "assembly plant",
    },
    Industry {
        products: "specialty coatings, adhesives and sealants",
        customers: "automotive suppliers and building-products manufacturers",
        facility: "blending plant",
    },
    Industry {
        products: "residential solar inverters and battery storage systems",
        customers: "installers, homebuilders and electrical distributors",
        facility: "manufacturing facility",
    },
    Industry {
        products: "freight brokerage and last-mile delivery services",
        customers: "e-commerce merchants and consumer-goods companies",
        facility: "regional distribution hub",
    },
    Industry {
        products: "payment processing and fraud-screening services",
        customers: "community banks, credit unions and online merchants",
        facility: "operations center",
    },
];

/// The facts of one invented company.
struct Company {
    name: String,
    short: String,
    industry: usize,
    inc_state: usize,
    inc_year: u32,
    founded_year: u32,
    subsidiary: String,
    sub_state: usize,
    sub_year: u32,
    hq_state: usize,
    plant_state: usize,
    employees: u32,
    full_time: u32,
    segments: u32,
}

/// A number as a filing writes it: `12,500`.
pub fn with_commas(n: u32) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn pick<'a>(rng: &mut SplitMix64, items: &[&'a str]) -> &'a str {
    items[rng.below(items.len())]
}

/// A state index other than those in `not`.
fn other_state(rng: &mut SplitMix64, not: &[usize]) -> usize {
    loop {
        let s = rng.below(STATES.len());
        if !not.contains(&s) {
            return s;
        }
    }
}

impl Company {
    fn invent(rng: &mut SplitMix64) -> Company {
        let stem = format!("{}{}", pick(rng, &NAME_FIRST), pick(rng, &NAME_SECOND));
        let name = format!("{stem} {}", pick(rng, &SUFFIX));
        // Delaware and Nevada are the usual states of incorporation; headquarters are anywhere.
        let inc_state = if rng.below(10) < 5 {
            rng.below(2)
        } else {
            rng.below(STATES.len())
        };
        let hq_state = other_state(rng, &[inc_state]);
        let plant_state = other_state(rng, &[inc_state, hq_state]);
        let sub_state = other_state(rng, &[inc_state, hq_state]);
        let inc_year = 1950 + rng.below(70) as u32;
        let founded_year = inc_year - 3 - rng.below(25) as u32;
        let sub_year = inc_year + 2 + rng.below(12) as u32;
        let employees = (200 + rng.below(48_000) as u32) / 10 * 10;
        let full_time = employees - employees * (10 + rng.below(30) as u32) / 100;
        Company {
            short: stem.clone(),
            subsidiary: format!(
                "{stem} {}",
                pick(
                    rng,
                    &[
                        "Logistics LLC",
                        "Capital LLC",
                        "International Ltd.",
                        "Services LLC"
                    ]
                )
            ),
            name,
            industry: rng.below(INDUSTRIES.len()),
            inc_state,
            inc_year,
            founded_year,
            sub_state,
            sub_year,
            hq_state,
            plant_state,
            employees,
            full_time,
            segments: 2 + rng.below(3) as u32,
        }
    }

    fn overview(&self) -> String {
        let ind = &INDUSTRIES[self.industry];
        format!(
            "{name} (\"{short},\" the \"Company,\" \"we,\" \"us\" or \"our\") designs, manufactures and \
             sells {products}. Our founders started the business as a small partnership in {founded}, \
             and over the following decades we grew through product development and a series of \
             acquisitions. We sell primarily to {customers}, both directly through our own sales force \
             and through independent distributors. We manage our business in {segments} reportable \
             segments, which are organized around the markets we serve. Our strategy is to expand our \
             installed base, to increase recurring revenue from service and replacement parts, and to \
             improve margins through disciplined pricing and productivity programs. Competition in our \
             markets is based on product performance, reliability, price, delivery times and the \
             quality of customer support. We believe our engineering capabilities, our long-standing \
             customer relationships and the breadth of our portfolio position us well against larger \
             competitors. Our results can vary from quarter to quarter because of seasonal demand, the \
             timing of large orders and changes in the cost of raw materials and freight.",
            name = self.name,
            short = self.short,
            products = ind.products,
            founded = self.founded_year,
            customers = ind.customers,
            segments = self.segments,
        )
    }

    fn corporate(&self) -> String {
        format!(
            "{name} was incorporated in the State of {state} in {year}. Our common stock is listed on \
             a national securities exchange under the symbol \"{ticker}.\" Our wholly owned \
             subsidiary, {sub}, was incorporated in {sub_state} in {sub_year} and holds certain of our \
             intellectual property and intercompany financing arrangements. We make our annual reports \
             on Form 10-K, quarterly reports on Form 10-Q, current reports on Form 8-K and amendments \
             to those reports available free of charge on our website as soon as reasonably \
             practicable after we file them. The information on our website is not part of this \
             report. Our board of directors has adopted a code of business conduct that applies to all \
             directors, officers and employees.",
            name = self.name,
            state = STATES[self.inc_state],
            year = self.inc_year,
            ticker = self.short.to_uppercase().chars().take(4).collect::<String>(),
            sub = self.subsidiary,
            sub_state = STATES[self.sub_state],
            sub_year = self.sub_year,
        )
    }

    fn human_capital(&self) -> String {
        format!(
            "As of December 31 of the last fiscal year, we had a total of {total} employees, of whom \
             {full} were full-time employees; the remainder were part-time or seasonal. None of our \
             employees in the United States is represented by a labor union, and we consider our \
             relations with our employees to be good. We invest in training programs for our \
             technicians and engineers, offer tuition assistance, and review compensation against \
             market data every year. Our safety program tracks recordable incidents at every site, \
             and each facility has a committee that reviews hazards and corrective actions. We seek to \
             attract and retain talent by offering competitive pay and benefits, flexible work \
             arrangements where the job allows, and opportunities for internal advancement.",
            total = with_commas(self.employees),
            full = with_commas(self.full_time),
        )
    }

    fn properties(&self) -> String {
        let ind = &INDUSTRIES[self.industry];
        format!(
            "Our principal executive offices are located in {hq_city}, {hq_state}, in a building that \
             we lease under an agreement expiring in ten years. Our largest {facility} is located in \
             {plant_state}, and we also lease sales offices and warehouse space in several other \
             states and abroad. We believe that our facilities are in good condition, are suitable \
             for their present use and, together with space available to us on commercially \
             reasonable terms, are adequate for our needs for the foreseeable future. We regularly \
             evaluate our footprint and may consolidate, expand or relocate facilities as our \
             business requires.",
            hq_city = CITIES[self.hq_state],
            hq_state = STATES[self.hq_state],
            facility = ind.facility,
            plant_state = STATES[self.plant_state],
        )
    }

    /// Another filing's paragraph: its own state of incorporation, headquarters and headcount.
    fn excerpt(&self) -> String {
        format!(
            "{name}, organized under the laws of {state} in {year}, maintains its principal \
             executive offices in {hq_city}, {hq_state}. At the end of its last fiscal year it \
             employed approximately {total} people. It sells {products} to {customers}.",
            name = self.name,
            state = STATES[self.inc_state],
            year = self.inc_year,
            hq_city = CITIES[self.hq_state],
            hq_state = STATES[self.hq_state],
            total = with_commas(self.employees),
            products = INDUSTRIES[self.industry].products,
            customers = INDUSTRIES[self.industry].customers,
        )
    }
}

/// The four sections of a filing and another company's excerpt, in a seeded order; returns the
/// documents and the position of each section (overview, corporate, human capital, properties).
fn documents(rng: &mut SplitMix64, c: &Company, other: &Company) -> (Vec<Document>, [usize; 4]) {
    let sections = [
        ("Item 1. Business — Overview", c.overview()),
        ("Item 1. Business — Corporate Information", c.corporate()),
        ("Item 1. Business — Human Capital", c.human_capital()),
        ("Item 2. Properties", c.properties()),
        (
            "Excerpt from another company's annual report",
            other.excerpt(),
        ),
    ];
    // Fisher–Yates over the five positions.
    let mut order: Vec<usize> = (0..sections.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let mut at = [0usize; 4];
    let docs = order
        .iter()
        .enumerate()
        .map(|(pos, &s)| {
            if s < 4 {
                at[s] = pos;
            }
            let (title, text) = &sections[s];
            Document::new(title.to_string(), text.clone())
        })
        .collect();
    (docs, at)
}

/// The question, the accepted answers and the section (index into `at`) that holds the answer.
fn question(c: &Company, cat: Category) -> (String, Vec<String>, usize) {
    match cat {
        Category::IncorporationState => (
            format!("In which U.S. state is {} incorporated?", c.name),
            vec![STATES[c.inc_state].to_string()],
            1,
        ),
        Category::IncorporationYear => (
            format!("In what year was {} incorporated?", c.name),
            vec![c.inc_year.to_string()],
            1,
        ),
        Category::EmployeeCount => (
            format!("How many employees in total does {} have?", c.name),
            vec![with_commas(c.employees), c.employees.to_string()],
            2,
        ),
        Category::HeadquartersState => (
            format!(
                "In which U.S. state are the principal executive offices of {} located?",
                c.name
            ),
            vec![STATES[c.hq_state].to_string()],
            3,
        ),
    }
}

/// `filings` invented filings from `seed`, four samples each (one per [`Category`]), in order.
pub fn generate(seed: u64, filings: usize) -> Vec<Sample> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(filings * Category::ALL.len());
    for f in 0..filings {
        let company = Company::invent(&mut rng);
        let other = loop {
            let o = Company::invent(&mut rng);
            if o.short != company.short {
                break o;
            }
        };
        let (docs, at) = documents(&mut rng, &company, &other);
        for cat in Category::ALL {
            let (q, answers, section) = question(&company, cat);
            let mut extra = Map::new();
            extra.insert("id".into(), json!(format!("filing-{f:04}-{}", cat.key())));
            extra.insert("category".into(), json!(cat.key()));
            extra.insert("gold".into(), json!(at[section]));
            extra.insert("answers".into(), Value::from(answers));
            let mut sample = Sample::new(q, docs.clone());
            sample.extra = extra;
            out.push(sample);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_with_commas() {
        assert_eq!(with_commas(7), "7");
        assert_eq!(with_commas(12_500), "12,500");
        assert_eq!(with_commas(1_234_567), "1,234,567");
    }

    #[test]
    fn the_gold_document_holds_the_answer_and_the_traps_differ() {
        let samples = generate(7, 30);
        assert_eq!(samples.len(), 120);
        for s in &samples {
            let gold = &s.docs[s.gold().unwrap()];
            let answer = &s.answers()[0];
            assert!(
                gold.text.contains(answer.as_str()),
                "{answer} in {}",
                gold.title
            );
        }
        // The traps: the founding and subsidiary years are never the incorporation year, the
        // headquarters never in the state of incorporation, full-time below total.
        for f in samples.chunks(4) {
            let year = &f[1].answers()[0];
            let corporate = &f[1].docs[f[1].gold().unwrap()].text;
            assert_eq!(corporate.matches(year.as_str()).count(), 1, "{corporate}");
            assert_ne!(f[0].answers()[0], f[3].answers()[0]);
        }
    }

    /// The committed dataset is the generator's output, byte for byte
    /// (`headscope dataset filings --seed 0 --count 200 --out samples/filings.jsonl`).
    #[test]
    fn the_shipped_dataset_is_what_the_generator_writes() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/filings.jsonl");
        let shipped = std::fs::read_to_string(&path).unwrap();
        let mut want = String::new();
        for s in generate(0, 200) {
            want.push_str(&serde_json::to_string(&s).unwrap());
            want.push('\n');
        }
        assert!(
            shipped == want,
            "samples/filings.jsonl differs from generate(0, 200)"
        );
        let loaded = crate::prompt::load_samples(&path).unwrap();
        assert_eq!(loaded.len(), 800);
        for cat in Category::ALL {
            let n = loaded
                .iter()
                .filter(|s| s.category() == Some(cat.key()))
                .count();
            assert_eq!(n, 200, "{}", cat.key());
        }
    }

    #[test]
    fn same_seed_same_samples() {
        let a = serde_json::to_string(&generate(3, 5)).unwrap();
        assert_eq!(a, serde_json::to_string(&generate(3, 5)).unwrap());
        assert_ne!(a, serde_json::to_string(&generate(4, 5)).unwrap());
    }
}
