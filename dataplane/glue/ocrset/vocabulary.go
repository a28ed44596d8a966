package ocrset

// vocabulary holds the words of the generated lines: common English words,
// words of signs, forms and invoices, and a few with hyphens, slashes or
// apostrophes. Every character is in PP-OCR's ppocr_keys_v1.txt.
var vocabulary = []string{
	"the", "of", "and", "to", "in", "is", "for", "on", "with", "as", "by", "at", "from", "or", "an", "be",
	"this", "that", "are", "was", "it", "not", "all", "can", "has", "will", "one", "two", "new", "more",
	"time", "year", "people", "way", "day", "man", "thing", "woman", "life", "child", "world", "school",
	"state", "family", "student", "group", "country", "problem", "hand", "part", "place", "case", "week",
	"company", "system", "program", "question", "work", "government", "number", "night", "point", "home",
	"water", "room", "mother", "area", "money", "story", "fact", "month", "lot", "right", "study", "book",
	"eye", "job", "word", "business", "issue", "side", "kind", "head", "house", "service", "friend",
	"father", "power", "hour", "game", "line", "end", "member", "law", "car", "city", "community", "name",
	"president", "team", "minute", "idea", "kid", "body", "information", "back", "parent", "face", "others",
	"level", "office", "door", "health", "person", "art", "war", "history", "party", "result", "change",
	"morning", "reason", "research", "girl", "guy", "moment", "air", "teacher", "force", "education",
	"quick", "brown", "fox", "jumps", "over", "lazy", "dog", "pack", "box", "five", "dozen", "liquor", "jugs",
	"warning", "high", "voltage", "authorized", "personnel", "only", "exit", "entrance", "keep", "clear",
	"invoice", "total", "amount", "due", "date", "paid", "order", "customer", "address", "phone", "email",
	"street", "road", "avenue", "north", "south", "east", "west", "open", "closed", "monday", "friday",
	"pipeline", "latency", "accuracy", "model", "variant", "replica", "batch", "server", "request",
	"inference", "detection", "recognition", "character", "error", "rate", "page", "text", "print",
	"zebra", "jazz", "quiz", "vexing", "jackdaws", "wizard", "oxygen", "puzzle", "rhythm", "galaxy",
	"well-known", "up-to-date", "and/or", "don't", "it's", "e-mail", "self-check", "24/7",
}
