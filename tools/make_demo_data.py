"""Generate the demo instruction-tuning dataset for this project.

Writes ``data/01_raw/demo_instructions.json``: a JSON list of alpaca-style rows
``{"instruction", "input", "output", "family", "verifiable"}``. Every row is
produced from the templates and hand-written word/sentence lists in this file,
written for this project (no rows are copied from any existing dataset).
Answers are computed in code, so every output is correct.

``verifiable`` rows have a single short answer that exact match (after
lowercasing and stripping punctuation/whitespace) can score; the other rows
are free-text tasks (paraphrase, definitions, summaries, ...).

The output is deterministic for a given ``--seed`` (``random.Random(seed)``),
uses only the standard library, and has no duplicate (instruction, input)
pairs. Run from the project root::

    python tools/make_demo_data.py [--out PATH] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "01_raw" / "demo_instructions.json"
DEFAULT_SEED = 1234


def pairs(text: str) -> list[tuple[str, ...]]:
    """Parse 'a:b c:d' (or 'a|b|c' per line) into tuples."""
    sep = "|" if "|" in text else ":"
    items = text.split("\n") if sep == "|" else text.split()
    return [tuple(p.strip() for p in item.split(sep)) for item in items if item.strip()]


# ----------------------------------------------------------------- word lists
WORDS = """apple banana cherry grape lemon mango orange peach pear plum melon kiwi
river mountain forest desert island valley ocean meadow canyon glacier
table chair window pillow blanket mirror ladder basket bucket candle
tiger zebra rabbit turtle falcon dolphin beaver donkey parrot salmon
violin guitar piano trumpet drum flute harp cello banjo organ
silver copper marble velvet cotton paper garden castle bridge harbour""".split()

PHRASES = """hello world|good morning|open the door|thank you very much|happy birthday
see you soon|fresh bread|blue sky|the quick fox|red apple|quiet library|strong coffee
summer holiday|close the window|green tea|welcome home|good luck|city lights
rainy afternoon|lost and found|north star|paper boat|deep blue sea|small town""".replace("\n", "|").split("|")

ANTONYMS = pairs("""hot:cold big:small fast:slow happy:sad open:closed early:late
full:empty high:low rich:poor strong:weak wet:dry clean:dirty thick:thin
loud:quiet wide:narrow deep:shallow cheap:expensive safe:dangerous true:false buy:sell
push:pull remember:forget accept:reject question:answer arrive:depart above:below
inside:outside before:after day:night north:south east:west up:down top:bottom
first:last always:never friend:enemy love:hate laugh:cry summer:winter polite:rude
brave:cowardly visible:invisible possible:impossible correct:incorrect increase:decrease
maximum:minimum include:exclude import:export entrance:exit major:minor ancient:modern
success:failure victory:defeat asleep:awake sunrise:sunset floor:ceiling
positive:negative optimist:pessimist permanent:temporary honest:dishonest legal:illegal
singular:plural wild:tame smooth:rough tight:loose sharp:blunt float:sink lend:borrow
attack:defend forward:backward plus:minus multiply:divide inhale:exhale guilty:innocent
ascend:descend""")

PLURALS = pairs("""cat:cats dog:dogs book:books apple:apples house:houses car:cars tree:trees
chair:chairs bird:birds river:rivers box:boxes bus:buses dish:dishes church:churches
watch:watches fox:foxes glass:glasses brush:brushes city:cities baby:babies country:countries
story:stories party:parties lady:ladies day:days key:keys toy:toys boy:boys leaf:leaves
knife:knives wife:wives wolf:wolves shelf:shelves half:halves loaf:loaves potato:potatoes
tomato:tomatoes hero:heroes echo:echoes piano:pianos photo:photos radio:radios zoo:zoos
man:men woman:women child:children tooth:teeth foot:feet mouse:mice goose:geese
person:people ox:oxen sheep:sheep deer:deer series:series species:species crisis:crises
analysis:analyses thesis:theses phenomenon:phenomena criterion:criteria roof:roofs
chief:chiefs belief:beliefs cliff:cliffs kiss:kisses quiz:quizzes lunch:lunches tax:taxes
monkey:monkeys valley:valleys family:families army:armies cherry:cherries louse:lice""")

PAST = pairs("""walk:walked play:played jump:jumped cook:cooked talk:talked open:opened
clean:cleaned watch:watched stop:stopped plan:planned drop:dropped try:tried cry:cried
study:studied carry:carried hurry:hurried live:lived dance:danced smile:smiled move:moved
arrive:arrived enjoy:enjoyed visit:visited go:went eat:ate see:saw take:took give:gave
write:wrote run:ran swim:swam sing:sang drink:drank begin:began speak:spoke break:broke
choose:chose drive:drove ride:rode fly:flew know:knew grow:grew throw:threw draw:drew
buy:bought bring:brought think:thought teach:taught catch:caught fight:fought sell:sold
tell:told find:found make:made have:had keep:kept sleep:slept feel:felt leave:left meet:met
send:sent spend:spent build:built lose:lost sit:sat stand:stood understand:understood
win:won hold:held read:read cut:cut put:put hit:hit forget:forgot come:came become:became
fall:fell wake:woke hide:hid bite:bit shake:shook freeze:froze steal:stole wear:wore
tear:tore lead:led pay:paid say:said hear:heard""")

COUNTRIES = [  # (country, capital, continent), grouped by continent below
    (country, capital, continent)
    for continent, items in {
        "Europe": "France=Paris; Germany=Berlin; Italy=Rome; Spain=Madrid; Portugal=Lisbon; "
        "Belgium=Brussels; Austria=Vienna; Switzerland=Bern; Sweden=Stockholm; Norway=Oslo; "
        "Denmark=Copenhagen; Finland=Helsinki; Poland=Warsaw; Greece=Athens; Ireland=Dublin; "
        "Hungary=Budapest; the Czech Republic=Prague; Romania=Bucharest; Ukraine=Kyiv; "
        "Iceland=Reykjavik; the United Kingdom=London",
        "Asia": "Japan=Tokyo; China=Beijing; India=New Delhi; South Korea=Seoul; Thailand=Bangkok; "
        "Vietnam=Hanoi; the Philippines=Manila; Malaysia=Kuala Lumpur; Pakistan=Islamabad; "
        "Bangladesh=Dhaka; Nepal=Kathmandu; Iran=Tehran; Iraq=Baghdad; Saudi Arabia=Riyadh; "
        "Mongolia=Ulaanbaatar",
        "Africa": "Egypt=Cairo; Kenya=Nairobi; Nigeria=Abuja; Ethiopia=Addis Ababa; Ghana=Accra; "
        "Morocco=Rabat; Algeria=Algiers; Tunisia=Tunis; Senegal=Dakar; Uganda=Kampala; "
        "Zimbabwe=Harare; Angola=Luanda",
        "North America": "the United States=Washington, D.C.; Canada=Ottawa; Mexico=Mexico City; "
        "Cuba=Havana; Jamaica=Kingston",
        "South America": "Brazil=Brasília; Argentina=Buenos Aires; Chile=Santiago; Peru=Lima; "
        "Colombia=Bogotá; Venezuela=Caracas; Ecuador=Quito; Uruguay=Montevideo",
        "Oceania": "Australia=Canberra; New Zealand=Wellington",
    }.items()
    for country, capital in (item.split("=") for item in items.split("; "))
]

UNITS = [  # (singular, plural, target unit, factor)
    ("kilometre", "kilometres", "metres", 1000), ("kilogram", "kilograms", "grams", 1000),
    ("hour", "hours", "minutes", 60), ("minute", "minutes", "seconds", 60),
    ("metre", "metres", "centimetres", 100), ("litre", "litres", "millilitres", 1000),
    ("day", "days", "hours", 24), ("week", "weeks", "days", 7), ("year", "years", "months", 12),
    ("centimetre", "centimetres", "millimetres", 10), ("tonne", "tonnes", "kilograms", 1000),
]

MONTHS = ("January February March April May June July August September October "
          "November December").split()

SUBJECTS = ["The old man", "My sister", "Our teacher", "A small boy", "The farmer", "Lena",
            "Tom", "The young nurse", "My neighbour", "Grandpa", "The tall woman", "Ravi"]
VERBS = ["sees", "buys", "carries", "finds", "likes", "brings", "drops", "picks up",
         "looks at", "sells", "paints", "wants"]
OBJECTS = ["a small box", "the red bicycle", "three apples", "a long letter", "the old map",
           "a blue umbrella", "two books", "a wooden chair", "the broken clock", "some flowers"]
PLACES = ["", "every morning", "on Sunday", "after lunch", "in the garden", "near the station",
          "at the market", "before dinner", "in the kitchen", "every weekend"]

# agent | present | past | past participle | patient | s(ingular)/p(lural) patient
PASSIVE = pairs("""the chef|cooks|cooked|cooked|the soup|s
the gardener|waters|watered|watered|the plants|p
the teacher|grades|graded|graded|the exams|p
my brother|paints|painted|painted|the fence|s
the mechanic|repairs|repaired|repaired|the car|s
the children|build|built|built|a sandcastle|s
the baker|bakes|baked|baked|the bread|s
the students|write|wrote|written|the essays|p
the company|hires|hired|hired|new workers|p
the storm|destroys|destroyed|destroyed|the old barn|s
the cat|chases|chased|chased|the mouse|s
the manager|signs|signed|signed|the contract|s
the police|arrest|arrested|arrested|the thief|s
the artist|draws|drew|drawn|a portrait|s
the postman|delivers|delivered|delivered|the letters|p
my grandmother|knits|knitted|knitted|the scarf|s
the committee|approves|approved|approved|the plan|s
the engineers|design|designed|designed|the bridge|s
the waiter|serves|served|served|the drinks|p
the dog|digs|dug|dug|a hole|s
the wind|shakes|shook|shaken|the windows|p
the farmer|feeds|fed|fed|the cows|p
the pilot|flies|flew|flown|the plane|s
the librarian|sorts|sorted|sorted|the books|p
the boy|kicks|kicked|kicked|the ball|s
the scientist|tests|tested|tested|the new medicine|s
the journalist|writes|wrote|written|the article|s
the band|plays|played|played|the song|s
Anna|reads|read|read|the report|s
Tom|washes|washed|washed|the dishes|p
the nurse|cleans|cleaned|cleaned|the wound|s
the mayor|opens|opened|opened|the new library|s
the volunteers|collect|collected|collected|the rubbish|s
the judge|announces|announced|announced|the verdict|s
the tourists|photograph|photographed|photographed|the castle|s
the museum|displays|displayed|displayed|the ancient coins|p
the team|wins|won|won|the match|s
the customer|returns|returned|returned|the jacket|s""")

# {original|synonym}: the input uses the first word, the paraphrase the second.
PARAPHRASE = """The {big|large} dog {ran|raced} across the {empty|deserted} street.
She was {happy|delighted} to {get|receive} the letter.
We {bought|purchased} a {small|tiny} house near the {sea|coast}.
The film was {very|extremely} {funny|amusing}.
He {began|started} his {job|work} early this morning.
The children were {scared|frightened} of the {loud|deafening} thunder.
Please {shut|close} the door {quietly|softly}.
The test was {simple|easy} for most {pupils|students}.
They {chose|selected} a {pretty|lovely} spot for the picnic.
My old car is still {quick|fast} and {reliable|dependable}.
The hotel room was {clean|spotless} and {quiet|peaceful}.
He {said|stated} that the plan was {smart|clever}.
The soup tastes {great|delicious} on a {cold|chilly} day.
I {need|require} more time to {finish|complete} the report.
The old bridge is {dangerous|unsafe} in {bad|poor} weather.
She {looked at|examined} the map {carefully|closely}.
Our neighbours have {huge|enormous} gardens.
The lesson was {boring|dull} and far too {long|lengthy}.
The shop {sells|offers} {cheap|inexpensive} furniture.
We {fixed|repaired} the {broken|damaged} fence yesterday.
The river was {calm|still} and {clear|transparent}.
He {answered|responded to} my message {quickly|promptly}.
The museum {shows|displays} {old|ancient} tools from the region.
She {helped|assisted} the {sick|ill} patients all night.
The teacher {praised|commended} the students for their {good|excellent} work.
This puzzle is {hard|tough} to {solve|crack}.
The streets were {quiet|silent} {after|following} the storm.
I {think|believe} the train will {arrive|come} soon.
The {rich|wealthy} family {lives|resides} in a {big|spacious} house.
The new phone is {costly|expensive} but {useful|practical}.
He {stopped|halted} the car at the {edge|side} of the road.
The baby was {tired|sleepy} after the {long|lengthy} trip.
They {talked about|discussed} the {problem|issue} for an hour.
She {liked|enjoyed} the {gift|present} very much.
The scientist {found|discovered} a {strange|peculiar} plant in the forest.
Please {keep|store} the milk in the {fridge|refrigerator}.
The crowd {shouted|yelled} when the team {won|triumphed}.
It was a {nice|pleasant} evening with {close|dear} friends.
The workers {built|constructed} a {tall|high} wall around the park.""".split("\n")

DEFINITIONS = dict(pairs("""umbrella|An umbrella is a folding frame covered with fabric that you hold over your head to keep off rain or sun.
library|A library is a place where books and other materials are kept for people to read or borrow.
bridge|A bridge is a structure built over a river, road or valley so that people or vehicles can cross it.
calendar|A calendar is a chart that shows the days, weeks and months of a year.
thermometer|A thermometer is an instrument used to measure temperature.
island|An island is a piece of land completely surrounded by water.
volcano|A volcano is a mountain with an opening through which lava, ash and gases can erupt from inside the earth.
recipe|A recipe is a set of instructions for preparing a particular dish, including the ingredients needed.
dictionary|A dictionary is a book or resource that lists words in alphabetical order and explains their meanings.
harvest|A harvest is the gathering of ripe crops from the fields.
passport|A passport is an official document that proves a person's identity and nationality when travelling abroad.
orchestra|An orchestra is a large group of musicians who play different instruments together.
desert|A desert is a large, dry area of land that receives very little rain.
vaccine|A vaccine is a substance given to people or animals to help their bodies build protection against a disease.
budget|A budget is a plan that shows how much money will be earned and spent over a period of time.
compass|A compass is a tool with a magnetic needle that shows the direction of north.
glacier|A glacier is a huge, slow-moving mass of ice formed from snow that has built up over many years.
neighbour|A neighbour is a person who lives next door to you or near you.
ladder|A ladder is a piece of equipment with steps or rungs that you climb to reach high places.
satellite|A satellite is an object that moves in orbit around a planet, such as the Moon or a machine sent into space.
museum|A museum is a building where objects of historical, scientific or artistic interest are kept and shown to the public.
microscope|A microscope is an instrument that makes very small objects look much larger so they can be studied.
democracy|Democracy is a system of government in which people choose their leaders by voting.
friendship|Friendship is a close relationship between people who like, trust and support each other.
courage|Courage is the ability to face danger, pain or difficulty without giving in to fear.
patience|Patience is the ability to wait or deal with problems calmly without becoming annoyed.
gravity|Gravity is the force that pulls objects towards each other, such as the force that makes things fall to the ground.
photosynthesis|Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide to make their own food.
habitat|A habitat is the natural home or environment of an animal or plant.
invention|An invention is something new that has been designed or created for the first time.
journey|A journey is an act of travelling from one place to another, usually over a long distance.
festival|A festival is a special day or period of celebration, often with music, food or events.
password|A password is a secret word or set of characters used to gain access to a computer, account or place.
helmet|A helmet is a hard hat worn to protect the head.
pharmacy|A pharmacy is a shop where medicines are prepared and sold.
orchard|An orchard is a piece of land where fruit trees are grown.
tide|The tide is the regular rise and fall of the sea level caused by the pull of the Moon and the Sun.
echo|An echo is a sound that is heard again after it bounces off a surface such as a wall or cliff.
fossil|A fossil is the preserved remains or trace of a plant or animal that lived a very long time ago.
marathon|A marathon is a running race of about 42 kilometres.
telescope|A telescope is an instrument that makes distant objects, such as stars and planets, appear closer and larger.
nest|A nest is a structure that birds and some other animals build to lay eggs and raise their young.
receipt|A receipt is a written or printed record showing that something has been paid for or received.
curiosity|Curiosity is a strong desire to know or learn about something.
apology|An apology is a statement saying that you are sorry for something you have done wrong.
deadline|A deadline is the latest time or date by which something must be finished.
vocabulary|Vocabulary is the set of words that a person knows or that are used in a particular language."""))

FORMAL = pairs("""Hey, can you send me the file?|Hello, could you please send me the file?
I wanna know when the meeting starts.|I would like to know when the meeting starts.
Thanks a lot for the help!|Thank you very much for your help.
Sorry, I can't make it tomorrow.|I apologise, but I will not be able to attend tomorrow.
The boss is super mad about the delay.|The manager is very displeased about the delay.
Gimme a call when you're free.|Please call me when you are available.
We gotta finish this by Friday.|We must complete this by Friday.
That idea is awesome.|That is an excellent idea.
I'm gonna be late, the bus broke down.|I will be late because the bus has broken down.
Can you check this out ASAP?|Could you please review this as soon as possible?
The party was totally great.|The event was thoroughly enjoyable.
Lots of people showed up.|A large number of people attended.
I don't get what you mean.|I do not understand what you mean.
Let's grab lunch sometime.|Perhaps we could have lunch together at some point.
The printer is busted again.|The printer is out of order again.
Just wanted to say the report looks good.|I would like to let you know that the report looks good.
Can't wait to see you guys.|I look forward to seeing you all.
We're out of paper, so get some more.|We have run out of paper, so please order more.
Tell me if you need anything.|Please let me know if you require anything.
The price is way too high.|The price is considerably too high.
He's kind of busy right now.|He is rather busy at the moment.
Sure, no problem!|Certainly, I would be happy to help.
The new guy is really smart.|The new colleague is very intelligent.
I messed up the numbers in the report.|I made an error in the figures in the report.
Yeah, the plan sounds fine.|Yes, the plan seems acceptable.
Send the stuff to my office.|Please send the materials to my office.
We need to figure out a fix.|We need to find a solution.
Our sales went up a ton this year.|Our sales increased significantly this year.
I'll get back to you soon.|I will respond to you shortly.
Don't forget to bring your ID.|Please remember to bring your identification.
The kids are driving me crazy.|The children are testing my patience.
Can I ask you something quick?|May I ask you a brief question?
Stop by my desk later.|Please come to my desk later.
The meeting got pushed to Monday.|The meeting has been postponed until Monday.
I think the deal is a bad idea.|I believe the agreement is unwise.
Who's in charge here?|Who is responsible here?
Hang on a sec.|Please wait a moment.
Your order will show up next week.|Your order will arrive next week.
We can't afford to mess this up.|We cannot afford to make any mistakes with this.
The weather's pretty awful today.|The weather is quite unpleasant today.""")

PRODUCTS = ["blender", "laptop", "backpack", "coffee maker", "desk lamp", "phone case", "kettle",
            "vacuum cleaner", "jacket", "tent", "printer", "keyboard", "water bottle",
            "office chair", "toaster"]
REVIEW = {  # label: (phrases, [(closing sentence, paraphrase)], tone)
    "Positive": (["works perfectly", "is worth every penny", "arrived early and looks great",
                  "is sturdy and easy to use", "exceeded all expectations", "is excellent value"],
                 [("", ""), ("I would happily buy it again.", "they would happily buy it again"),
                  ("I recommend it to everyone.", "they recommend it to everyone")], "satisfied"),
    "Negative": (["broke after two days", "is a complete waste of money",
                  "stopped working within a week", "feels cheap and flimsy",
                  "arrived damaged and late", "is much smaller than described"],
                 [("", ""), ("I would not buy it again.", "they would not buy it again"),
                  ("I am returning it.", "they are returning it")], "disappointed"),
}

PEOPLE = [("Maria", "she"), ("James", "he"), ("Aisha", "she"), ("Leo", "he"), ("Priya", "she"),
          ("Daniel", "he"), ("Sofia", "she"), ("Omar", "he"), ("Hannah", "she"), ("Kenji", "he")]
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
FIRST_ACTS = ["visited the city museum", "went to the farmers' market", "cleaned the whole flat",
              "took a long walk by the river", "met an old friend for coffee",
              "finished a difficult school project", "repaired the kitchen sink",
              "attended a cooking class", "played football in the park",
              "went shopping for new shoes"]
SECOND_ACTS = ["had lunch at a small café", "read a book at home", "watched a film with friends",
               "cooked dinner for the family", "went to bed early", "wrote a few emails",
               "took the bus back home", "baked a chocolate cake", "went for a swim",
               "listened to music on the balcony"]
LINKS = [("After that", "and then"), ("Later that day", "and later"), ("Afterwards", "and afterwards")]


# ------------------------------------------------------------------ helpers
def ask(rng: random.Random, templates: list[str], item: str, **kw) -> tuple[str, str]:
    """Pick a template; '{x}' inlines the item, otherwise it goes into `input`."""
    t = rng.choice(templates)
    if "{x}" in t:
        return t.format(x=item, **kw), ""
    return t.format(**kw), item


def sentence(rng: random.Random) -> str:
    place = rng.choice(PLACES)
    words = [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)] + ([place] if place else [])
    return " ".join(words) + "."


def cap(text: str) -> str:
    return text[0].upper() + text[1:]


def csv(values) -> str:
    return ", ".join(str(v) for v in values)


# ------------------------------------------------------ verifiable families
def gen_addition(rng):
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    ins, inp = ask(rng, ["What is {x}?", "Compute the sum. Reply with the number only.",
                         "Add these two numbers and give only the result.",
                         "Calculate {x} and answer with a single number."], f"{a} + {b}")
    return ins, inp, str(a + b)


def gen_subtraction(rng):
    a, b = sorted((rng.randint(10, 99), rng.randint(10, 99)), reverse=True)
    ins, inp = ask(rng, ["What is {x}?", "Subtract and reply with the number only.",
                         "Work out the difference. Give only the result.",
                         "Calculate {x}. Answer with a single number."], f"{a} - {b}")
    return ins, inp, str(a - b)


def gen_multiplication(rng):
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    ins, inp = ask(rng, ["What is {x}?", "Multiply the numbers. Reply with the number only.",
                         "What is the product of {a} and {b}?",
                         "Calculate {x} and give only the answer."], f"{a} × {b}", a=a, b=b)
    return ins, inp, str(a * b)


def gen_unit_conversion(rng):
    one, many, target, factor = rng.choice(UNITS)
    n = rng.randint(1, 25)
    qty = f"{n} {one if n == 1 else many}"
    ins, inp = ask(rng, ["How many {t} are in {x}?", "Convert {x} to {t}. Reply with the number only.",
                         "Convert this quantity to {t}. Give only the number.",
                         "{x} is equal to how many {t}? Answer with a number."], qty, t=target)
    return ins, inp, str(n * factor)


def gen_sort_words(rng):
    words = rng.sample(WORDS, rng.randint(3, 6))
    ins, inp = ask(rng, ["Sort these words alphabetically: {x}",
                         "Put the words in alphabetical order. Answer as a comma-separated list.",
                         "Arrange the following words from A to Z, separated by commas.",
                         "Alphabetize this list: {x}"], csv(words))
    return ins, inp, csv(sorted(words))


def gen_sort_numbers(rng):
    nums = rng.sample(range(1, 100), rng.randint(3, 6))
    ins, inp = ask(rng, ["Sort these numbers from smallest to largest: {x}",
                         "Put the numbers in ascending order. Answer as a comma-separated list.",
                         "Order the following numbers from lowest to highest, separated by commas.",
                         "Arrange in increasing order: {x}"], csv(nums))
    return ins, inp, csv(sorted(nums))


def gen_uppercase(rng):
    text = rng.choice(PHRASES + WORDS)
    ins, inp = ask(rng, ["Convert '{x}' to uppercase.", "Write the following text in capital letters.",
                         "Rewrite this in all caps.", "Return '{x}' in upper case."], text)
    return ins, inp, text.upper()


def gen_lowercase(rng):
    text = rng.choice(PHRASES + WORDS)
    shown = text.upper() if rng.random() < 0.5 else text.title()
    ins, inp = ask(rng, ["Convert '{x}' to lowercase.", "Write the following text in small letters only.",
                         "Rewrite this text in all lowercase.", "Return '{x}' in lower case."], shown)
    return ins, inp, text.lower()


def gen_antonym(rng):
    word, opposite = rng.choice(ANTONYMS)[:: rng.choice((1, -1))]
    ins, inp = ask(rng, ["What is the opposite of '{x}'?", "Give an antonym of the word. One word only.",
                         "Write the antonym of '{x}'.", "Name the word that means the opposite."], word)
    return ins, inp, opposite


def gen_plural(rng):
    noun, plural = rng.choice(PLURALS)
    ins, inp = ask(rng, ["What is the plural of '{x}'?", "Give the plural form of this noun.",
                         "Write the plural of the noun '{x}'.", "Turn this singular noun into its plural."],
                   noun)
    return ins, inp, plural


def gen_past_tense(rng):
    verb, past = rng.choice(PAST)
    ins, inp = ask(rng, ["What is the simple past tense of '{x}'?", "Give the past tense of this verb.",
                         "Write the past simple form of the verb 'to {x}'.",
                         "Convert the verb to the simple past."], verb)
    return ins, inp, past


def gen_date_format(rng):
    y, m, d = rng.randint(1990, 2035), rng.randint(1, 12), rng.randint(1, 28)
    iso = f"{y:04d}-{m:02d}-{d:02d}"
    ins, inp = ask(rng, ["Convert the date {x} to the format 'day month year', for example 5 May 2021.",
                         "Rewrite this YYYY-MM-DD date as day, full month name and year (like 14 July 2019).",
                         "Write {x} in the form '9 June 2021' (day, month name, year).",
                         "Reformat the ISO date as 'D Month YYYY', e.g. 3 October 2020."], iso)
    return ins, inp, f"{d} {MONTHS[m - 1]} {y}"


def gen_capital(rng):
    country, capital, _ = rng.choice(COUNTRIES)
    ins, inp = ask(rng, ["What is the capital of {x}?", "Name the capital city of this country.",
                         "Which city is the capital of {x}?", "Give the capital of the country below."],
                   country)
    return ins, inp, capital


def gen_continent(rng):
    country, _, continent = rng.choice(COUNTRIES)
    opts = "Africa, Asia, Europe, North America, South America or Oceania"
    ins, inp = ask(rng, ["On which continent is {x}? Answer with one of: {o}.",
                         "Name the continent this country is in ({o}).",
                         "Which continent does {x} belong to? Choose from {o}.",
                         "Give the continent of the country below. Options: {o}."],
                   country, o=opts)
    return ins, inp, continent


def gen_word_count(rng):
    s = sentence(rng)
    ins, inp = ask(rng, ["How many words are in this sentence: \"{x}\"?", "Count the words in the sentence.",
                         "How many words does the following sentence contain?",
                         "Count the words in \"{x}\" and reply with a number."], s)
    return ins, inp, str(len(s.split()))


def gen_first_last_word(rng):
    s = sentence(rng)
    words = s.rstrip(".").split()
    if rng.random() < 0.5:
        ins, inp = ask(rng, ["What is the first word of \"{x}\"?", "Give the first word of this sentence.",
                             "Which word does the following sentence start with?"], s)
        return ins, inp, words[0]
    ins, inp = ask(rng, ["What is the last word of \"{x}\"?", "Give the last word of this sentence.",
                         "Which word does the following sentence end with? Ignore punctuation."], s)
    return ins, inp, words[-1]


def gen_compare_numbers(rng):
    a, b = rng.sample(range(1, 1000), 2)
    if rng.random() < 0.5:
        ins, inp = ask(rng, ["Which number is larger, {x}?", "Return the larger of the two numbers.",
                             "Pick the bigger number: {x}"], f"{a} or {b}")
        return ins, inp, str(max(a, b))
    ins, inp = ask(rng, ["Which number is smaller, {x}?", "Return the smaller of the two numbers.",
                         "Pick the smaller number: {x}"], f"{a} or {b}")
    return ins, inp, str(min(a, b))


def gen_next_in_sequence(rng):
    step = rng.choice([-1, 1]) * rng.randint(2, 12)
    length = rng.randint(4, 5)
    start = rng.randint(1, 30) if step > 0 else rng.randint(-step * length + 1, 120)
    seq = [start + i * step for i in range(length)]
    ins, inp = ask(rng, ["What number comes next in the sequence {x}?",
                         "Continue the arithmetic sequence. Give only the next number.",
                         "Find the next term of this sequence.",
                         "What is the next number: {x}, ...?"], csv(seq))
    return ins, inp, str(start + length * step)


def gen_even_odd(rng):
    n = rng.randint(1, 999)
    ins, inp = ask(rng, ["Is {x} even or odd?", "Say whether the number is even or odd.",
                         "Classify {x} as 'even' or 'odd'.", "Even or odd? Answer with one word."], str(n))
    return ins, inp, "even" if n % 2 == 0 else "odd"


def gen_yes_no_math(rng):
    a, b = rng.randint(1, 99), rng.randint(1, 99)
    kind = rng.randrange(4)
    if kind == 0:
        claim, truth = f"{a} is greater than {b}", a > b
    elif kind == 1:
        claim, truth = f"{a} is less than {b}", a < b
    elif kind == 2:
        c = a + b + rng.choice([0, 0, -2, -1, 1, 10])
        claim, truth = f"{a} + {b} equals {c}", c == a + b
    else:
        d = rng.randint(2, 9)
        n = d * rng.randint(2, 12) + rng.choice([0, 0, 1])
        claim, truth = f"{n} is divisible by {d}", n % d == 0
    ins, inp = ask(rng, ["Is the following true? Reply yes or no: {x}.", "Is the statement correct? Answer yes or no.",
                         "Answer yes or no: is it true that {x}?", "Check this claim and reply yes or no."],
                   claim)
    return ins, inp, "yes" if truth else "no"


# -------------------------------------------------- free-text (unverifiable)
def gen_passive_voice(rng):
    agent, pres, past, pp, patient, num = rng.choice(PASSIVE)
    if rng.random() < 0.5:
        active, be = f"{cap(agent)} {pres} {patient}.", ("is", "are")[num == "p"]
    else:
        active, be = f"{cap(agent)} {past} {patient}.", ("was", "were")[num == "p"]
    ins, inp = ask(rng, ["Rewrite the following sentence in the passive voice.",
                         "Change this sentence from active to passive voice: {x}",
                         "Turn the sentence into the passive voice, keeping the same tense.",
                         "Put this sentence in the passive voice: {x}"], active)
    return ins, inp, f"{cap(patient)} {be} {pp} by {agent}."


def gen_paraphrase(rng):
    parts = rng.choice(PARAPHRASE).replace("}", "{").split("{")  # odd parts are 'word|synonym'

    def pick(i: int) -> str:
        return "".join(p.split("|")[i] if j % 2 else p for j, p in enumerate(parts))

    ins, inp = ask(rng, ["Paraphrase the sentence by replacing some words with synonyms.",
                         "Rewrite this sentence using synonyms for the key words: {x}",
                         "Say the same thing in different words, keeping the sentence structure.",
                         "Give a synonym-based paraphrase of: {x}"], pick(0))
    return ins, inp, pick(1)


def gen_definition(rng):
    word = rng.choice(sorted(DEFINITIONS))
    ins, inp = ask(rng, ["Define the word '{x}' in one sentence.",
                         "Write a one-sentence definition of the following word.",
                         "What does '{x}' mean? Answer in a single sentence.",
                         "Explain the meaning of this word in one sentence."], word)
    return ins, inp, DEFINITIONS[word]


def gen_sentiment_explain(rng):
    label = rng.choice(sorted(REVIEW))
    phrases, closings, tone = REVIEW[label]
    product, phrase = rng.choice(PRODUCTS), rng.choice(phrases)
    closing, gist = rng.choice(closings)
    review = f"The {product} {phrase}." + (f" {closing}" if closing else "")
    extra = f" and adds that {gist}" if gist else ""
    ins, inp = ask(rng, ["Classify the sentiment of this review as positive or negative and briefly explain why.",
                         "Is the following customer review positive or negative? Give a short reason.",
                         "Decide whether this review is positive or negative, then justify your answer "
                         "in one sentence: {x}"], review)
    return ins, inp, f"{label}. The reviewer says the {product} {phrase}{extra}, so the overall tone is {tone}."


def gen_formal_rewrite(rng):
    casual, formal = rng.choice(FORMAL)
    ins, inp = ask(rng, ["Rewrite the sentence in a more formal tone.", "Make this sentence sound more formal: {x}",
                         "Rephrase the following in formal English.",
                         "How would you say \"{x}\" in a formal business email?"], casual)
    return ins, inp, formal


def gen_summarise(rng):
    (name, pron), day = rng.choice(PEOPLE), rng.choice(DAYS)
    first, second = rng.choice(FIRST_ACTS), rng.choice(SECOND_ACTS)
    link, joiner = rng.choice(LINKS)
    text = f"{name} {first} on {day}. {link}, {pron} {second}."
    ins, inp = ask(rng, ["Summarise the following text in one sentence.",
                         "Condense these two sentences into a single sentence.",
                         "Write a one-sentence summary of: {x}"], text)
    return ins, inp, f"On {day}, {name} {first} {joiner} {second}."


# name: (generator, verifiable, rows)
FAMILIES = {
    "addition": (gen_addition, True, 55), "subtraction": (gen_subtraction, True, 55),
    "multiplication": (gen_multiplication, True, 55), "unit_conversion": (gen_unit_conversion, True, 50),
    "sort_words": (gen_sort_words, True, 50), "sort_numbers": (gen_sort_numbers, True, 50),
    "uppercase": (gen_uppercase, True, 45), "lowercase": (gen_lowercase, True, 45),
    "antonym": (gen_antonym, True, 55), "plural": (gen_plural, True, 50),
    "past_tense": (gen_past_tense, True, 50), "date_format": (gen_date_format, True, 50),
    "capital": (gen_capital, True, 55), "continent": (gen_continent, True, 45),
    "word_count": (gen_word_count, True, 45), "first_last_word": (gen_first_last_word, True, 45),
    "compare_numbers": (gen_compare_numbers, True, 50), "next_in_sequence": (gen_next_in_sequence, True, 50),
    "even_odd": (gen_even_odd, True, 45), "yes_no_math": (gen_yes_no_math, True, 50),
    "passive_voice": (gen_passive_voice, False, 70), "paraphrase": (gen_paraphrase, False, 70),
    "definition": (gen_definition, False, 70), "sentiment_explain": (gen_sentiment_explain, False, 70),
    "formal_rewrite": (gen_formal_rewrite, False, 70), "summarise": (gen_summarise, False, 70),
}


def generate(seed: int = DEFAULT_SEED) -> list[dict]:
    """Build all rows: each family is topped up until its quota of unique rows."""
    rng = random.Random(seed)
    seen: set[tuple[str, str]] = set()
    rows: list[dict] = []
    for family, (gen, verifiable, quota) in FAMILIES.items():
        made, attempts = 0, 0
        while made < quota:
            attempts += 1
            if attempts > quota * 200:
                raise RuntimeError(f"family {family!r} cannot reach {quota} unique rows")
            instruction, inp, output = gen(rng)
            key = (instruction.strip(), inp.strip())
            if key in seen or not output.strip():
                continue
            seen.add(key)
            rows.append({"instruction": instruction, "input": inp, "output": output,
                         "family": family, "verifiable": verifiable})
            made += 1
    rng.shuffle(rows)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output JSON path")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    args = parser.parse_args(argv)
    rows = generate(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    share = sum(r["verifiable"] for r in rows) / len(rows)
    print(f"wrote {len(rows)} rows ({len(FAMILIES)} families, {share:.0%} verifiable) to {args.out}")


if __name__ == "__main__":
    main()
