// Search ranking of the website (Sphinx's html_search_scorer): pages whose text or title matches
// come before API objects (`instabilities.curvature.sharpness`, ...), which stay listed after them.
var Scorer = {
  score: (result) => {
    const [docname, title, anchor, descr, score] = result;
    // object results carry a description ("Python function, in ..."); page results do not
    const isApi = docname === "book/api" || (descr !== null && descr !== undefined && descr !== "");
    return isApi ? score - 30 : score;
  },
  objNameMatch: 11,
  objPartialMatch: 6,
  objPrio: { 0: 15, 1: 5, 2: -5 },
  objPrioDefault: 0,
  title: 15,
  partialTitle: 7,
  term: 5,
  partialTerm: 2,
};
