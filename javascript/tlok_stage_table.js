// The stage table is a Dataframe inside the closed "Stages" accordion. gradio 4's virtual table measures itself
// while hidden (no rows) and, when the accordion opens with the table below the window's edge, draws no rows
// until it is scrolled or the window resized (Forge Neo, Forge). Opening the accordion sends the table a scroll
// event, on which it lays its rows out again. gradio 3.41 and 6 draw every row: there is no such table to find.
// Runs as the WebUI's extension script, and in the standalone app wrapped as gradio's load function.
(function() {
    document.addEventListener("click", function(event) {
        var target = event.target;
        if (!target.closest || !target.closest("#tlok_workflow_stages_accordion") ||
                target.closest("#tlok_workflow_stages")) {
            return;
        }
        [100, 500].forEach(function(delay) {   // once it has measured itself open; again on a slow machine
            setTimeout(function() {
                var table = document.querySelector("#tlok_workflow_stages svelte-virtual-table-viewport > table");
                if (table) {
                    table.dispatchEvent(new Event("scroll"));
                }
            }, delay);
        });
    }, true);
})();
