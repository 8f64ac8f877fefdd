"""Generate the demo plain-text corpus for the ``pt`` (continued pretraining) pipeline.

Writes ``data/01_raw/demo_text.jsonl``: one JSON object per line,
``{"text": str, "kind": str, "id": str}``. Every document is built from the templates and
hand-written word lists in this file, written for this project (nothing is copied from an
existing corpus). Five kinds of short documents:

* ``town``: encyclopedic entries about fictional towns (names built from syllables);
* ``animal``: short profiles from a hand-written table of well-known animals;
* ``howto``: how-to paragraphs with hand-written steps;
* ``market``: market reports whose sums are computed in code;
* ``journey``: train journeys whose arrival times are computed in code.

The output is deterministic for a given ``--seed`` (``random.Random(seed)``), uses only the
standard library and holds no duplicate text. Run from the project root::

    python tools/make_demo_text.py [--out PATH] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "01_raw" / "demo_text.jsonl"
DEFAULT_SEED = 2024

# ----------------------------------------------------------------- word lists
ONSETS = "Bel Cor Dun Eld Fen Gar Hol Ist Kel Lin Mar Nor Oak Pel Quen Ros Sal Tam Ul Ver Wil Yar".split()
ENDINGS = "brook ford haven ley mere mouth stead ton wick worth by dale field gate holm".split()
RIVERS = "Amber Silt Coldwater Heron Willow Greywash Tumble Lark Millrace Otter Reedy Slate".split()
TOWN_KINDS = ["market", "fishing", "mill", "hill", "river", "harbour", "mining", "farming"]
FOUNDERS = ["wool traders", "fishing families", "monks from the coast", "salt merchants", "miners",
            "a group of farmers", "river boatmen", "clockmakers"]
PRODUCTS = ["blue cheese", "woven baskets", "copper kettles", "apple cider", "smoked fish", "wool blankets",
            "clay pots", "honey cakes", "wooden toys", "linen cloth", "pear jam", "stone carvings"]
LANDMARKS = ["an old stone bridge", "a round watchtower", "a covered market hall", "a tall windmill",
             "a painted clock tower", "a quiet walled garden", "a narrow harbour lighthouse", "a library built of red brick"]
FESTIVALS = ["lantern festival", "harvest fair", "boat race", "music week", "flower parade", "cheese market",
             "kite day", "winter market"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
NAMES = ["Anna", "Ben", "Clara", "David", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kira", "Leo",
         "Maya", "Nils", "Olga", "Pavel", "Rosa", "Samir", "Tara", "Viktor"]
GOODS = [("apples", "baskets"), ("pears", "baskets"), ("eggs", "boxes"), ("carrots", "bunches"),
         ("potatoes", "sacks"), ("cheeses", "wheels"), ("loaves of bread", "trays"), ("jars of honey", "crates"),
         ("plums", "baskets"), ("onions", "sacks")]

# name | class | home | food | feature
ANIMALS = [line.split(" | ") for line in """\
tiger | mammal | forests and grasslands of Asia | deer and wild pigs | an orange coat with black stripes
zebra | mammal | savannas of Africa | grass | black and white stripes that differ on every animal
rabbit | mammal | meadows and woodland edges | grass, herbs and bark | long ears and strong back legs
dolphin | mammal | oceans and coastal seas | fish and squid | a curved fin and a habit of travelling in groups
beaver | mammal | rivers and lakes of Europe and North America | bark, leaves and water plants | a flat tail and teeth that never stop growing
camel | mammal | deserts of Africa and Asia | dry grasses and thorny plants | one or two humps that store fat
giraffe | mammal | open woodland in Africa | leaves of acacia trees | the longest neck of any land animal
hedgehog | mammal | gardens, hedges and woods | insects, worms and snails | a back covered in stiff spines
elephant | mammal | savannas and forests of Africa and Asia | grass, fruit and bark | a long trunk used for drinking and lifting
falcon | bird | cliffs, open country and cities | smaller birds | very fast dives when it hunts
parrot | bird | tropical forests | seeds, nuts and fruit | a hooked beak and bright feathers
penguin | bird | cold southern coasts | fish and krill | wings shaped like flippers for swimming
owl | bird | woods and farmland | mice and other small animals | large forward-facing eyes and silent flight
swan | bird | lakes and slow rivers | water plants | a long neck and white feathers
robin | bird | gardens and woodland | worms, insects and berries | a red-orange breast
salmon | fish | rivers and the northern oceans | insects, shrimp and small fish | a long journey back to the river where it hatched
shark | fish | oceans all over the world | fish and seals | rows of teeth that are replaced all its life
goldfish | fish | ponds and home aquariums | plants and small insects | orange scales
turtle | reptile | warm seas and beaches | sea grass, jellyfish and crabs | a hard shell and flippers
crocodile | reptile | rivers and swamps of warm countries | fish and animals that come to drink | a long snout and strong jaws
lizard | reptile | warm rocky places | insects | a tail that can break off and grow again
frog | amphibian | ponds and wet meadows | insects and worms | long back legs for jumping
bee | insect | gardens, meadows and orchards | nectar and pollen | its colonies, which make honey and wax
ant | insect | nests in soil and wood | seeds, insects and sweet liquids | its colonies, in which each ant has a task""".splitlines()]

# task | steps separated by ";" | closing tip
HOWTOS = [line.split(" | ") for line in """\
repot a house plant | water the plant an hour before you start; choose a pot one size larger with a drainage hole; tip the plant out and loosen the roots gently; set it on fresh soil at the same depth as before; fill the sides with soil and water it well | keep it out of strong sun for a week while the roots settle
brew a pot of tea | boil fresh water; warm the pot with a little hot water and pour it away; add one spoon of leaves per cup; pour on the water and wait three to five minutes; strain the tea into cups | green tea tastes better with water that has cooled a little
patch a bicycle tyre | take the wheel off and remove the tube; pump a little air in and find the hole by listening; roughen the area with sandpaper; spread glue and wait until it is dry to the touch; press the patch on firmly | check the inside of the tyre for the thorn or glass that caused the hole
bake a simple loaf of bread | mix flour, water, salt and yeast into a dough; knead it for ten minutes until it is smooth; leave it covered until it has doubled in size; shape it and let it rise again; bake it in a hot oven until it sounds hollow when tapped | let the loaf cool before you cut it, or the inside will be gummy
plant a tree | dig a hole twice as wide as the roots; loosen the soil at the bottom; set the tree in so the root collar sits at ground level; fill the hole and firm the soil with your foot; water it slowly and deeply | a ring of mulch keeps the soil moist but should not touch the trunk
sharpen a kitchen knife | soak the whetstone if it needs water; hold the blade at a low, steady angle; push it across the stone from heel to tip; repeat the same number of strokes on the other side; finish with light strokes on the fine side | test the edge on a sheet of paper rather than your thumb
wash a wool sweater | fill a basin with cool water and a little wool soap; press the sweater under gently without rubbing; leave it for ten minutes; rinse it in clean water of the same temperature; roll it in a towel to squeeze out the water | dry it flat so it keeps its shape
start a compost heap | choose a shady corner with bare soil; lay twigs at the bottom for air; add layers of green and brown material; keep the heap as damp as a wrung-out sponge; turn it every few weeks | leave out meat and dairy, which attract pests
paint a wooden fence | brush off dirt and loose paint; sand the rough spots; fill cracks with wood filler; put on a coat of primer; paint with long strokes along the grain | paint on a dry, mild day so the coat cures evenly
fold a paper boat | take a rectangle of paper and fold it in half; fold the top corners to the middle; fold the bottom strips up on both sides; open the shape into a square and fold it into a triangle; pull the sides apart to open the boat | waxed paper floats for longer than plain paper
make a simple budget | write down your income for the month; list the fixed costs such as rent; add an estimate for food and travel; set aside an amount for savings; compare the plan with what you really spent at the end of the month | small regular savings add up faster than people expect
clean a cast iron pan | rinse it with hot water while it is still warm; scrub off food with a brush or coarse salt; dry it completely on the stove; rub a thin layer of oil over the surface; heat it for a minute and let it cool | avoid leaving it to soak, which causes rust
tie a bowline knot | make a small loop in the standing part of the rope; pass the free end up through the loop; take it around behind the standing part; bring it back down through the small loop; pull the knot tight | the bowline keeps a loop that does not slip, which is why sailors like it
learn a new word each day | keep a small notebook for new words; write each word with a sentence that uses it; say the word aloud a few times; use it in conversation the same day; review the week's words every Sunday | words are easier to remember when they come from something you read with interest
set up a bird feeder | choose a spot that cats cannot reach; hang the feeder near a bush where birds can shelter; fill it with seeds suited to local birds; clean it every two weeks; keep a dish of fresh water nearby | it can take a few days before birds trust a new feeder
pack for a weekend hike | check the weather forecast; lay out clothes in layers; add water, food and a first aid kit; pack a map and a torch; put the heaviest items close to your back | tell someone where you are going and when you will return""".splitlines()]

# ----------------------------------------------------------------- generators


def town(rng: random.Random) -> str:
    name = rng.choice(ONSETS) + rng.choice(ENDINGS)
    river, kind, year = rng.choice(RIVERS), rng.choice(TOWN_KINDS), rng.randrange(1180, 1890)
    people, product = rng.randrange(12, 480) * 100, rng.choice(PRODUCTS)
    landmark, festival, month = rng.choice(LANDMARKS), rng.choice(FESTIVALS), rng.choice(MONTHS)
    opening = rng.choice([
        f"{name} is a small {kind} town on the {river} River.",
        f"{name} is a {kind} town that lies where the {river} River bends to the south.",
        f"The {kind} town of {name} stands on the banks of the {river} River.",
    ])
    history = rng.choice([
        f"It was founded in {year} by {rng.choice(FOUNDERS)}.",
        f"Records show that {rng.choice(FOUNDERS)} settled there in {year}.",
    ])
    today = rng.choice([
        f"Today about {people:,} people live there, and the town is known for its {product}.",
        f"It has about {people:,} inhabitants and is best known for its {product}.",
    ])
    sights = rng.choice([
        f"Visitors come to see {landmark}, and every {month} the town holds a {festival}.",
        f"Its best-known sight is {landmark}. The yearly {festival} takes place in {month}.",
    ])
    return " ".join([opening, history, today, sights])


def animal_profiles() -> list[str]:
    """Two differently phrased profiles per animal."""
    docs = []
    for name, group, home, food, feature in ANIMALS:
        article = "an" if group[0] in "aeiou" else "a"
        docs.append(f"The {name} is {article} {group} that lives in {home}. It feeds mainly on {food}. "
                    f"It is known for {feature}.")
        docs.append(f"{name.capitalize()}s are found in {home}. This {group} eats {food}, and one of its best-known "
                    f"features is {feature}.")
    return docs


def howtos() -> list[str]:
    docs = []
    for task, steps, tip in HOWTOS:
        first, *middle, last = steps.split("; ")
        links = ["Next", "Then", "After that"][: len(middle)]
        body = " ".join(f"{link}, {step}." for link, step in zip(links, middle))
        docs.append(f"How to {task}. First, {first}. {body} Finally, {last}. A useful tip: {tip}.")
    return docs


def market(rng: random.Random) -> str:
    seller, day = rng.choice(NAMES), rng.choice(WEEKDAYS)
    place = rng.choice(ONSETS) + rng.choice(ENDINGS)
    (goods_a, unit_a), (goods_b, unit_b) = rng.sample(GOODS, 2)
    count_a, price_a = rng.randrange(2, 20), rng.randrange(2, 15)
    count_b, price_b = rng.randrange(2, 20), rng.randrange(2, 15)
    total = count_a * price_a + count_b * price_b
    return (f"On {day} at the {place} market, {seller} sold {count_a} {unit_a} of {goods_a} at {price_a} coins each "
            f"and {count_b} {unit_b} of {goods_b} at {price_b} coins each. That makes {count_a * price_a} coins for "
            f"the {goods_a} and {count_b * price_b} coins for the {goods_b}, {total} coins in all.")


def journey(rng: random.Random) -> str:
    start, end = rng.sample([a + b for a in ONSETS[:8] for b in ENDINGS[:6]], 2)
    hour, minute = rng.randrange(5, 21), rng.choice(range(0, 60, 5))
    duration = rng.randrange(15, 180)
    arrival = hour * 60 + minute + duration
    traveller = rng.choice(NAMES)
    return (f"{traveller} took the {hour:02d}:{minute:02d} train from {start} to {end}. The journey takes "
            f"{duration} minutes, so the train arrives at {arrival // 60 % 24:02d}:{arrival % 60:02d}. "
            f"{rng.choice(['The carriage was quiet', 'The train was full', 'It rained the whole way', 'The sun was out'])}, "
            f"and {traveller} {rng.choice(['read a book', 'watched the fields go by', 'wrote a letter', 'slept a little'])}.")


QUOTAS = {"town": (town, 130), "market": (market, 110), "journey": (journey, 90)}


def generate(seed: int = DEFAULT_SEED) -> list[dict]:
    """All documents, unique, shuffled; each random kind is topped up to its quota."""
    rng = random.Random(seed)
    docs = [("animal", text) for text in animal_profiles()] + [("howto", text) for text in howtos()]
    seen = {text for _, text in docs}
    for kind, (make, quota) in QUOTAS.items():
        made, attempts = 0, 0
        while made < quota:
            attempts += 1
            if attempts > quota * 100:
                raise RuntimeError(f"kind {kind!r} cannot reach {quota} unique documents")
            text = make(rng)
            if text not in seen:
                seen.add(text)
                docs.append((kind, text))
                made += 1
    rng.shuffle(docs)
    return [{"text": text, "kind": kind, "id": f"{kind}-{index:04d}"} for index, (kind, text) in enumerate(docs)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output JSON lines path")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    args = parser.parse_args(argv)
    docs = generate(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="\n") as fh:
        fh.writelines(json.dumps(doc, ensure_ascii=False) + "\n" for doc in docs)
    words = sum(len(doc["text"].split()) for doc in docs)
    print(f"wrote {len(docs)} documents ({words:,} words) to {args.out}")


if __name__ == "__main__":
    main()
