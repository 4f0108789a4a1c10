"""Real text in many scripts for the tests of quality, the simulator and the token estimate.

Short encyclopedia-style paragraphs written as a native reader would (facts of common knowledge), one per
script, each with a question a reader would ask, an answer copied from the text, and an unrelated sentence
in the same language. Shared by tests/evaluation, tests/simulator, tests/llm and tests/generation.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    language: str
    script: str
    text: str  # the paragraph (a document chunk)
    question: str  # a question the paragraph answers
    answer: str  # one of its sentences, word for word
    unrelated: str  # a sentence of the same language about something else


SAMPLES: dict[str, Sample] = {
    "en": Sample(
        "English", "Latin",
        "Mount St. Helens is an active volcano in Skamania County, Washington, in the Pacific Northwest of the "
        "United States. It is best known for its major eruption on May 18, 1980, the deadliest and most "
        "economically destructive volcanic event in the history of the country. The eruption removed the upper "
        "part of the mountain and lowered its summit by about four hundred metres. Fifty-seven people were "
        "killed, and hundreds of homes, bridges and miles of highway were destroyed.",
        "When did Mount St. Helens have its major eruption?",
        "It is best known for its major eruption on May 18, 1980, the deadliest and most economically "
        "destructive volcanic event in the history of the country.",
        "The violin has four strings tuned in perfect fifths and is played with a bow.",
    ),
    "ru": Sample(
        "Russian", "Cyrillic",
        "Байкал — пресноводное озеро в южной части Восточной Сибири. Это самое глубокое озеро на планете: его "
        "наибольшая глубина составляет 1642 метра. В Байкале содержится около двадцати процентов мировых "
        "запасов пресной поверхностной воды. Озеро окружено горными хребтами, и в него впадают более трёхсот "
        "рек, а вытекает только одна — Ангара. В 1996 году Байкал был включён в список объектов Всемирного "
        "наследия ЮНЕСКО.",
        "Какова наибольшая глубина озера Байкал?",
        "Это самое глубокое озеро на планете: его наибольшая глубина составляет 1642 метра.",
        "Скрипка имеет четыре струны, на ней играют смычком.",
    ),
    "zh": Sample(
        "Chinese", "Han",
        "长城是中国古代的军事防御工程，修筑的历史可上溯到西周时期。秦始皇统一六国后，把原来各国的城墙连接起来，"
        "形成了万里长城。现存的长城大多是明朝修建的，东起山海关，西至嘉峪关。根据国家文物局的测量，历代长城的"
        "总长度约为两万一千多千米。一九八七年，长城被列入世界文化遗产名录。",
        "现存的长城大多是哪个朝代修建的？",
        "现存的长城大多是明朝修建的，东起山海关，西至嘉峪关。",
        "熊猫主要以竹子为食，生活在四川的山区。",
    ),
    "ja": Sample(
        "Japanese", "Han and kana",
        "富士山は静岡県と山梨県にまたがる活火山で、標高は三千七百七十六メートルである。日本で最も高い山であり、"
        "古くから信仰の対象とされてきた。最後の噴火は一七〇七年の宝永噴火で、江戸の町にも火山灰が降った。"
        "二〇一三年には世界文化遺産に登録された。夏の登山シーズンには毎年多くの人が山頂を目指す。",
        "富士山の最後の噴火はいつですか？",
        "最後の噴火は一七〇七年の宝永噴火で、江戸の町にも火山灰が降った。",
        "味噌汁は大豆から作られた味噌を使う日本の伝統的なスープです。",
    ),
    "ar": Sample(
        "Arabic", "Arabic",
        "نهر النيل هو أطول نهر في قارة أفريقيا، ويبلغ طوله نحو ستة آلاف وستمئة كيلومتر. ينبع النيل الأبيض "
        "من منطقة البحيرات العظمى، بينما ينبع النيل الأزرق من بحيرة تانا في إثيوبيا. يلتقي الفرعان في مدينة "
        "الخرطوم عاصمة السودان. ثم يجري النهر شمالا عبر مصر حتى يصب في البحر الأبيض المتوسط. اعتمدت الحضارة "
        "المصرية القديمة على فيضان النيل في الزراعة.",
        "أين يلتقي النيل الأبيض والنيل الأزرق؟",
        "يلتقي الفرعان في مدينة الخرطوم عاصمة السودان.",
        "الكمان آلة موسيقية وترية لها أربعة أوتار ويعزف عليها بالقوس.",
    ),
    "hi": Sample(
        "Hindi", "Devanagari",
        "गंगा भारत की सबसे लंबी नदी है और इसकी लंबाई लगभग ढाई हज़ार किलोमीटर है। यह नदी हिमालय के गंगोत्री "
        "हिमनद से निकलती है। गंगा उत्तर प्रदेश, बिहार और पश्चिम बंगाल से होकर बहती है और बंगाल की खाड़ी में "
        "गिरती है। हिंदू धर्म में गंगा को पवित्र नदी माना जाता है। वाराणसी और हरिद्वार इसके किनारे बसे प्रमुख "
        "तीर्थ स्थल हैं।",
        "गंगा नदी कहाँ से निकलती है?",
        "यह नदी हिमालय के गंगोत्री हिमनद से निकलती है।",
        "शतरंज एक बोर्ड खेल है जिसे दो खिलाड़ी चौंसठ खानों पर खेलते हैं।",
    ),
    "th": Sample(
        "Thai", "Thai",
        "กรุงเทพมหานครเป็นเมืองหลวงและเมืองที่มีประชากรมากที่สุดของประเทศไทย ตั้งอยู่บนฝั่งแม่น้ำเจ้าพระยา "
        "พระบาทสมเด็จพระพุทธยอดฟ้าจุฬาโลกมหาราชทรงสถาปนาเมืองนี้เป็นราชธานีเมื่อปี พ.ศ. 2325 "
        "ปัจจุบันกรุงเทพมหานครเป็นศูนย์กลางทางเศรษฐกิจ การศึกษา และการคมนาคมของประเทศ",
        "เมืองใดเป็นเมืองหลวงของประเทศไทย?",
        "กรุงเทพมหานครเป็นเมืองหลวงและเมืองที่มีประชากรมากที่สุดของประเทศไทย",
        "ช้างเอเชียเป็นสัตว์เลี้ยงลูกด้วยนมขนาดใหญ่ที่กินพืชเป็นอาหาร",
    ),
    "el": Sample(
        "Greek", "Greek",
        "Η Ακρόπολη της Αθήνας είναι ένας βραχώδης λόφος πάνω από την πόλη της Αθήνας. Στην κορυφή της "
        "βρίσκεται ο Παρθενώνας, ναός αφιερωμένος στη θεά Αθηνά. Ο ναός χτίστηκε τον πέμπτο αιώνα π.Χ. με "
        "πρωτοβουλία του Περικλή. Το 1987 η Ακρόπολη ανακηρύχθηκε μνημείο παγκόσμιας κληρονομιάς της UNESCO.",
        "Σε ποια θεά είναι αφιερωμένος ο Παρθενώνας;",
        "Στην κορυφή της βρίσκεται ο Παρθενώνας, ναός αφιερωμένος στη θεά Αθηνά.",
        "Το βιολί έχει τέσσερις χορδές και παίζεται με δοξάρι.",
    ),
    "ko": Sample(
        "Korean", "Hangul",
        "한라산은 제주도 중앙에 있는 화산으로, 높이는 1947미터이다. 남한에서 가장 높은 산이며 정상에는 "
        "백록담이라는 화구호가 있다. 한라산 일대는 1970년에 국립공원으로 지정되었다. 2007년에는 제주 화산섬과 "
        "용암동굴이 유네스코 세계자연유산으로 등재되었다.",
        "한라산의 정상에는 무엇이 있습니까?",
        "남한에서 가장 높은 산이며 정상에는 백록담이라는 화구호가 있다.",
        "김치는 배추와 고춧가루로 만드는 한국의 발효 음식이다.",
    ),
    "he": Sample(
        "Hebrew", "Hebrew",
        "ים המלח הוא אגם מלוח השוכן בבקע ים המלח, בין ישראל לירדן. פני המים שלו הם המקום הנמוך ביותר על פני "
        "היבשה. מליחות המים גבוהה פי עשרה בערך ממליחות האוקיינוס, ולכן כמעט אין בו חיים. מפלס האגם יורד בכל "
        "שנה בכמטר אחד.",
        "מדוע כמעט אין חיים בים המלח?",
        "מליחות המים גבוהה פי עשרה בערך ממליחות האוקיינוס, ולכן כמעט אין בו חיים.",
        "לכינור יש ארבעה מיתרים ומנגנים בו בעזרת קשת.",
    ),
    "es": Sample(
        "Spanish", "Latin",
        "El río Amazonas atraviesa Perú, Colombia y Brasil antes de desembocar en el océano Atlántico. Es el río "
        "más caudaloso del mundo y su cuenca ocupa más de siete millones de kilómetros cuadrados. La selva "
        "amazónica alberga una enorme diversidad de especies. Los geógrafos todavía discuten la ubicación exacta "
        "de su nacimiento en los Andes peruanos.",
        "¿Dónde desemboca el río Amazonas?",
        "El río Amazonas atraviesa Perú, Colombia y Brasil antes de desembocar en el océano Atlántico.",
        "El violín tiene cuatro cuerdas y se toca con un arco.",
    ),
}
