"""Every template and word list of the kit's tasks, in one place.

The datasets (``make_task``) and the bundled model's training sentences (``generate_sentences``) are both
drawn from these lists, so the model is trained on exactly the distribution it is later probed with.
Lists are deliberately larger than needed: ``make_task`` keeps only the words a given tokenizer encodes
as the required number of tokens (one, or two for name induction) and reports the rest.

Template syntax: ``{SLOT}`` is filled with a word. A space in front of a slot belongs to the word, so
``"Then, {IO} and"`` becomes the pieces ``"Then,"``, ``" Mary"``, ``" and"``; that is how BPE tokenizers
see words (``" Mary"`` is one GPT-2 token, ``"Mary"`` another).
"""
from __future__ import annotations

# --- People ---------------------------------------------------------------------------------------------
MALE_NAMES = (
    "John", "James", "Michael", "David", "Robert", "William", "Richard", "Thomas", "Charles", "Daniel",
    "Matthew", "Mark", "Paul", "Steven", "Andrew", "Kevin", "Brian", "George", "Edward", "Ryan",
    "Jacob", "Gary", "Eric", "Jason", "Jeff", "Frank", "Scott", "Peter", "Henry", "Jack",
    "Adam", "Nathan", "Kyle", "Sam", "Justin", "Aaron", "Sean", "Patrick", "Alex", "Ben",
    "Tom", "Joe", "Mike", "Dan", "Tim", "Luke", "Bill", "Jim", "Carl", "Roger",
    "Arthur", "Victor", "Martin", "Ian", "Simon", "Oliver", "Max", "Leo", "Harry", "Noah",
)
FEMALE_NAMES = (
    "Mary", "Sarah", "Emma", "Anna", "Laura", "Lisa", "Karen", "Nancy", "Linda", "Susan",
    "Jessica", "Rachel", "Rebecca", "Kate", "Amy", "Emily", "Alice", "Grace", "Julia", "Helen",
    "Ruth", "Jane", "Maria", "Diana", "Rose", "Sophie", "Lucy", "Claire", "Amanda", "Michelle",
    "Jennifer", "Elizabeth", "Catherine", "Victoria", "Hannah", "Olivia", "Megan", "Natalie", "Jenny",
    "Anne", "Ellen", "Molly", "Sally", "Eva", "Lily", "Ella", "Chloe", "Sophia", "Heather",
    "Monica", "Diane", "Barbara", "Patricia", "Angela", "Sandra", "Carol", "Julie", "Kim", "Jill",
)
#: IOI uses everyone; gendered pronouns need to know which pronoun a name takes.
NAMES = MALE_NAMES + FEMALE_NAMES
SURNAMES = (
    "Smith", "Brown", "Jones", "Miller", "Davis", "Wilson", "Taylor", "Clark", "Lewis", "Walker",
    "Hall", "Allen", "Young", "King", "Wright", "Green", "Baker", "Adams", "Nelson", "Hill",
    "Campbell", "Mitchell", "Roberts", "Carter", "Phillips", "Evans", "Turner", "Parker", "Collins",
    "Edwards", "Stewart", "Morris", "Murphy", "Cook", "Rogers", "Morgan", "Cooper", "Reed", "Bailey",
    "Bell", "Howard", "Ward", "Cox", "Wood", "Watson", "Brooks", "Bennett", "Gray", "Hughes", "Price",
)
#: Rarer first names; GPT-2 splits many of them into exactly two tokens (name induction, BPE style).
RARE_NAMES = (
    "Delilah", "Bethany", "Marisol", "Rosalind", "Gwendolyn", "Imogen", "Philippa", "Ottilie", "Seraphina",
    "Leopold", "Thaddeus", "Cornelius", "Ignatius", "Barnaby", "Percival", "Lysander", "Evander",
    "Casimir", "Leander", "Florian", "Anselm", "Benedikt", "Tobias", "Rupert", "Alistair", "Crispin",
    "Desmond", "Fergus", "Gideon", "Horatio", "Jasper", "Lucian", "Magnus", "Octavia", "Prudence",
    "Rosamund", "Sabrina", "Tamsin", "Ursula", "Winifred", "Yvette", "Zelda", "Beatrix", "Clementine",
    "Dorothea", "Esmeralda", "Felicity", "Georgina", "Henrietta", "Isadora", "Josephine", "Leonora",
    "Marigold", "Nerissa", "Ophelia", "Penelope", "Roxanne", "Sylvia", "Theodora", "Vivienne", "Wilhelmina",
    "Ambrose", "Bartholomew", "Cedric", "Dorian", "Emeric", "Ferdinand", "Godfrey", "Humphrey", "Isidore",
    "Jeremiah", "Lorcan", "Mortimer", "Nathaniel", "Osborne", "Quentin", "Reginald", "Sebastian",
)

# --- Things and places ----------------------------------------------------------------------------------
PLACES = (
    "store", "park", "school", "house", "office", "restaurant", "hospital", "station", "garden", "beach",
    "market", "library", "church", "museum", "hotel", "bank", "airport", "kitchen", "cafe", "theater",
    "gym", "farm", "zoo", "lake", "river", "forest", "mall", "bar", "village", "castle",
)
OBJECTS = (
    "drink", "book", "ring", "bag", "key", "letter", "bottle", "phone", "ball", "basket",
    "box", "cake", "card", "pen", "flower", "ticket", "watch", "coat", "hat", "gift",
    "bone", "apple", "snack", "necklace", "computer", "camera", "map", "candle", "cup", "knife",
)
#: Events that last a span of years (Greater-Than).
EVENT_NOUNS = (
    "war", "siege", "drought", "famine", "reign", "expedition", "journey", "voyage", "trial", "strike",
    "rebellion", "occupation", "crisis", "plague", "dynasty", "conflict", "empire", "project", "campaign",
    "revolution", "festival", "marriage", "tradition", "friendship", "partnership", "alliance", "treaty",
    "construction", "investigation", "negotiation", "blockade", "epidemic", "depression", "boom", "feud",
)

# --- IOI (Wang et al. 2022 shape: two names introduced, one repeated, the other is the answer) ---------
#: Written in ABBA order (IO first); the BABA variant swaps the {IO} and {S1} slots.
IOI_TEMPLATES = (
    "Then, {IO} and {S1} went to the {PLACE}. {S2} gave a {OBJECT} to",
    "When {IO} and {S1} got a {OBJECT} at the {PLACE}, {S2} decided to give it to",
    "After {IO} and {S1} arrived at the {PLACE}, {S2} handed a {OBJECT} to",
    "While {IO} and {S1} were working at the {PLACE}, {S2} gave a {OBJECT} to",
    "Friends {IO} and {S1} found a {OBJECT} at the {PLACE}. {S2} gave it to",
    "Then, {IO} and {S1} had a long argument. Afterwards {S2} said to",
    "When {IO} and {S1} went to the {PLACE}, {S2} brought a {OBJECT} for",
    "The {PLACE} was quiet when {IO} and {S1} arrived. {S2} gave a {OBJECT} to",
    "Yesterday, {IO} and {S1} went to the {PLACE}. {S2} threw a {OBJECT} to",
    "At the {PLACE}, {IO} and {S1} met for lunch. {S2} offered a {OBJECT} to",
    "Then, {IO} and {S1} were cleaning the {PLACE}. {S2} handed the {OBJECT} to",
    "Later, {IO} and {S1} were walking near the {PLACE}. {S2} showed a {OBJECT} to",
    "When {IO} and {S1} left the {PLACE}, {S2} sent a {OBJECT} to",
    "On Sunday, {IO} and {S1} visited the {PLACE}. {S2} sold a {OBJECT} to",
    "After lunch, {IO} and {S1} stayed at the {PLACE}. {S2} wrote a letter to",
    "Then, {IO} and {S1} were thinking about going to the {PLACE}. {S2} wanted to give a {OBJECT} to",
)

#: Training-only material for the bundled model (see ``app_helpers.toy.corpus``). Stories recombine the
#: openings and closings of IOI_TEMPLATES (split at {S2}), so the model sees the evaluation wording, and add
#: what defeats one-layer shortcuts: sentences before the story that mention the story's names (counting
#: no longer tells S from IO) and closings with another name after the subject (suppressing the most recent
#: name no longer works).
IOI_STORY_PREAMBLES = (
    "{N} likes the {PLACE2}.", "{N} has a {OBJECT2}.", "{N} and {M} are friends.", "It was a nice day.",
    "The {PLACE2} was busy.",
)
IOI_DISTRACTOR_CLOSINGS = (
    "{S2} gave {C}'s {OBJECT} to", "{S2} gave the {OBJECT} of {C} to", "{S2} and {C} gave a {OBJECT} to",
    "{S2} took the {OBJECT} from {C} and gave it to", "Then, {S2} showed {C} a {OBJECT} and handed it to",
)

# --- Greater-Than (Hanna et al. 2023 shape) ------------------------------------------------------------
#: ``17{YY}``: GPT-2 splits " 1732" into " 17" + "32"; the word-level tokenizer splits digit pairs alike.
GREATER_THAN_TEMPLATES = (
    "The {NOUN} lasted from the year 17{YY} to the year 17",
    "The {NOUN} started in the year 17{YY} and ended in the year 17",
    "The {NOUN} went on from 17{YY} until 17",
    "The {NOUN} began in 17{YY} and was over by 17",
    "The {NOUN} ran from the year 17{YY} to the year 17",
)
CENTURY = "17"
#: Two-digit year endings; the dataset draws YY from 02..98 so both answer sets are non-empty.
YEAR_SUFFIXES = tuple(f"{y:02d}" for y in range(100))
GREATER_THAN_CORRUPT_YY = "01"

# --- Gendered pronouns (Mathwin et al. shape) -----------------------------------------------------------
PRONOUN_TEMPLATES = (
    "{SO} {NAME} is a really great friend, isn't",
    "{SO} {NAME} is such a good cook, isn't",
    "{SO} {NAME} is a very kind teacher, isn't",
    "{SO} {NAME} is always late for work, isn't",
    "{SO} {NAME} is the best player on the team, isn't",
    "{SO} {NAME} is a really funny neighbour, isn't",
)
PRONOUN_CLEAN_START, PRONOUN_CORRUPT_START = "So", "That"
PRONOUN_CORRUPT_NAME = "person"
PRONOUNS = {"male": " he", "female": " she"}

# --- Name induction -------------------------------------------------------------------------------------
#: {NAME} is a two-token name; the prompt ends with its first token ({FIRST}) and the answer is its second.
INDUCTION_TEMPLATES = (
    "Yesterday, {NAME} went to the {PLACE}. Today, {FIRST}",
    "Then, {NAME} bought a {OBJECT} at the {PLACE}. After that, {FIRST}",
    "This morning, {NAME} visited the {PLACE}. In the evening, {FIRST}",
    "Earlier, {NAME} dropped a {OBJECT} in the {PLACE}. Later, {FIRST}",
    "After dinner, {NAME} walked to the {PLACE}. There, {FIRST}",
    "Last week, {NAME} lost a {OBJECT} near the {PLACE}. Luckily, {FIRST}",
    "Once again, {NAME} cleaned the {PLACE}. Then, {FIRST}",
    "On Monday, {NAME} found a {OBJECT} at the {PLACE}. So, {FIRST}",
)

# --- Docstring (ACDC's task shape; BPE tokenizers only) -------------------------------------------------
#: The prompt ends at ``:param`` after documenting the first arguments; the answer is the next argument
#: of the signature. A signature slot ({B}) and its docstring mention ({B_DOC}) are separate slots so that
#: the corruption can give them different names.
DOCSTRING_TEMPLATES = (
    'def {FUNC}(self, {A}, {B}, {C}, {D}):\n    """Do the work.\n\n'
    "    :param {A_DOC}: {W1} {W2}\n    :param {B_DOC}: {W3} {W4}\n    :param",
    'def {FUNC}(self, {A}, {B}, {C}, {D}, {E}):\n    """Run the job.\n\n'
    "    :param {A_DOC}: {W1} {W2}\n    :param {B_DOC}: {W3} {W4}\n    :param {C_DOC}: {W5} {W6}\n    :param",
    'def {FUNC}(self, {A}, {B}, {C}):\n    """Update the state.\n\n'
    "    :param {A_DOC}: {W1}\n    :param {B_DOC}: {W2}\n    :param",
)
FUNCTION_NAMES = (
    "load", "run", "update", "check", "get", "parse", "compute", "send", "read", "write",
    "build", "create", "delete", "process", "render", "validate", "fetch", "save", "apply", "convert",
)
ARGUMENT_NAMES = (
    "file", "name", "path", "data", "value", "key", "size", "count", "index", "text",
    "model", "user", "url", "port", "host", "mode", "config", "item", "node", "parent",
    "source", "target", "result", "message", "token", "state", "level", "limit", "offset", "width",
    "height", "color", "format", "label", "query", "timeout", "callback", "buffer", "line", "field",
)
DOC_WORDS = (
    "the", "a", "new", "old", "first", "last", "current", "default", "main", "local",
    "remote", "input", "output", "given", "final", "next", "previous", "total", "maximum", "minimum",
    "number", "list", "string", "object", "value", "name", "file", "set", "table", "record",
)
